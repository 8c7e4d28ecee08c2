"""``purrsight data check``: every seeded problem found at its line, clean data passes,
and training's reader refuses the same lines with the same words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_data import OVERRIDES, make_seeded_dataset
from purrsight.cli import main
from purrsight.config import load_config
from purrsight.data.check import PROBLEM_KINDS, check_dataset
from purrsight.data.demo import generate_demo_dataset
from purrsight.data.manifest import ManifestError, read_manifest


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, dict[tuple[str, int], str]]:
    return make_seeded_dataset(tmp_path_factory.mktemp("seeded"))


def _found(report) -> dict[tuple[str, int], str]:
    """{(split, line): kind} of the problems in a report."""
    out = {}
    for p in report.problems:
        name, _, line = p.where.rpartition(":")
        key = (Path(name).stem, int(line))
        assert key not in out, f"two problems at one line: {out[key]} and {p.kind}"
        out[key] = p.kind
    return out


def test_each_seeded_problem_is_reported_at_its_line(seeded) -> None:
    folder, planted = seeded
    config = load_config(None, OVERRIDES)
    report = check_dataset([folder], config.media, config.labels)
    assert _found(report) == planted
    assert set(planted.values()) == set(PROBLEM_KINDS) - {"file"}  # every kind seeded once+
    assert report.samples_ok == 6  # train 1, 21 (ok-2), 24 (video); val 1; val 2 and 3
    assert report.warnings == 1 and report.errors == len(planted) - 1
    assert report.shared_subjects == {"cat-a": ["train", "val"]}
    assert report.subjects == {"train": 1, "val": 2}
    assert report.labels["train"] == {"content": 13, "playful": 2, "curious": 1}


def test_cli_prints_each_problem_with_its_line_and_exits_1(seeded, capsys) -> None:
    folder, planted = seeded
    sets = [arg for o in OVERRIDES for arg in ("--set", o)]
    assert main(["data", "check", str(folder), *sets]) == 1
    out = capsys.readouterr().out
    for (split, line), kind in planted.items():
        assert f"{folder / split}.jsonl:{line}: {kind}: " in out
    errors = len(planted) - 1  # all but the duplicate_content warning
    assert f"result: FAILED ({errors} errors)" in out
    assert main(["data", "check", str(folder), "--json", *sets]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["errors"] == errors and report["warnings"] == 1
    assert report["counts"]["path_outside"] == 3 and report["counts"]["undecodable_media"] == 3


def test_default_limits_let_the_long_and_large_files_pass(seeded) -> None:
    folder, planted = seeded
    found = _found(check_dataset([folder]))
    limited = {k for k, kind in planted.items() if kind in ("too_large", "too_long")}
    assert limited and not limited & found.keys()


def test_clean_demo_data_passes_with_its_distributions(tmp_path: Path, capsys) -> None:
    summary = generate_demo_dataset(tmp_path, n=28, seed=3, image_size=32, audio_seconds=0.3)
    report = check_dataset([tmp_path])
    assert report.errors == 0 and report.warnings == 0, report.format()
    assert list(report.files.values()) == ["train", "val", "test"]  # all.jsonl left out
    assert report.samples_ok == report.lines == summary["n"]
    for split, n in summary["splits"].items():
        assert sum(report.labels[split].values()) == n
    assert sum(report.subjects.values()) == summary["subjects"] and not report.shared_subjects
    assert main(["data", "check", str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl")]) == 0
    assert "result: OK" in capsys.readouterr().out


def test_same_subject_in_all_jsonl_and_a_split_is_reported(tmp_path: Path) -> None:
    generate_demo_dataset(tmp_path, n=14, seed=1, image_size=32, audio_seconds=0.3)
    report = check_dataset([tmp_path / "all.jsonl", tmp_path / "test.jsonl"])
    kinds = {p.kind for p in report.problems}
    assert {"duplicate_id", "subject_in_two_splits", "duplicate_content_across_splits"} <= kinds


def test_a_path_that_does_not_exist_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("\n\n")
    report = check_dataset([tmp_path / "train.jsonl"])
    assert [(p.kind, p.message) for p in report.problems] == [("file", "no samples in the file")]


def test_training_refuses_the_first_bad_line_with_the_same_words(seeded) -> None:
    folder, _ = seeded
    config = load_config(None, OVERRIDES)
    first = check_dataset([folder / "train.jsonl"], config.media, config.labels).problems[0]
    with pytest.raises(ManifestError) as err:
        read_manifest(folder / "train.jsonl", config.labels)
    assert str(err.value) == f"{first.where}: {first.message}"
