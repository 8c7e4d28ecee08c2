"""`purrsight data import`: synthetic folders in each public set's layout → JSONL + card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_fixtures import make_catmeows, make_catsound, write_png, write_wav
from purrsight.cli import main
from purrsight.data.importers import DataImportError, import_dataset
from purrsight.data.importers.catmeows import parse_name
from purrsight.data.importers.catsound import source_prefix
from purrsight.data.manifest import read_manifest
from purrsight.report import Report
from purrsight.vocabulary import DEFAULT_LABELS


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "all.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def _skipped(out: Path) -> dict[str, str]:
    report = json.loads((out / "import_report.json").read_text())
    return {s["path"]: s["kind"] for s in report["skipped_files"]}


# ----------------------------------------------------------------------------- catmeows


def test_catmeows_name_convention() -> None:
    assert parse_name("B_ANI01_MC_FN_SIM01_101") == {
        "context": "B",
        "cat": "ANI01",
        "breed": "MC",
        "sex": "FN",
        "owner": "SIM01",
        "session": "1",
        "counter": "01",
    }
    for bad in ("B_ANI01_MC_FN_SIM01", "B_ANI01_XX_FN_SIM01_101", "B_ANI01_MC_FQ_SIM01_101"):
        assert parse_name(bad) is None, bad


@pytest.fixture(scope="module")
def catmeows_import(tmp_path_factory):
    root = make_catmeows(tmp_path_factory.mktemp("catmeows_src"))
    folder = root / "dataset"
    write_wav(folder / "meow_of_unknown_origin.wav")  # malformed name
    write_wav(folder / "X_ANI01_MC_FN_SIM01_199.wav")  # unknown context
    (folder / "I_EVE01_EU_FN_OWN09_101.wav").write_bytes(b"RIFF\x00\x00not audio")
    (root / "README.txt").write_text("CatMeows")
    out = root.parent / "catmeows_out"
    return root, out, import_dataset("catmeows", root, out)


def test_catmeows_jsonl_has_labels_subjects_and_reports(catmeows_import) -> None:
    _, out, result = catmeows_import
    samples = read_manifest(out / "all.jsonl", list(DEFAULT_LABELS))
    assert len(samples) == 4 * 3 * 2 == len(result.records)
    records = _records(out)
    first = records["dataset-B_ANI01_MC_FN_SIM01_101"]
    assert first["label"] == "content" and first["subject_id"] == "ANI01"
    assert first["audio"] == "media/dataset/B_ANI01_MC_FN_SIM01_101.wav" and first["image"] is None
    assert first["meta"] == {
        "source_label": "B",
        "context": "B",
        "breed": "Maine Coon",
        "sex": "female, neutered",
        "owner": "SIM01",
        "session": 1,
        "counter": 1,
    }
    report = Report.model_validate(first["response"])
    assert report.emotion == "content" and report.evidence.vocalization == "meow"
    assert "brushed" in report.summary and report.modalities == ["audio"]
    labels = {r["id"].split("-")[1][0]: r["label"] for r in records.values()}
    assert labels == {"B": "content", "F": "demanding", "I": "fearful"}
    assert {s.subject_id for s in samples} == {"ANI01", "BAC01", "CAN01", "DAK01"}
    for sample in samples:  # linked into the output folder, not pointing at the source
        assert sample.audio.is_file() and sample.audio.is_relative_to(out.resolve())


def test_catmeows_reports_every_file_it_did_not_import(catmeows_import) -> None:
    _, out, result = catmeows_import
    assert _skipped(out) == {
        "dataset/meow_of_unknown_origin.wav": "malformed name",
        "dataset/X_ANI01_MC_FN_SIM01_199.wav": "unknown label",
        "dataset/I_EVE01_EU_FN_OWN09_101.wav": "undecodable",
        "README.txt": "not media",
    }
    assert result.summary()["skipped"] == {
        "malformed name": 1,
        "not media": 1,
        "undecodable": 1,
        "unknown label": 1,
    }
    card = (out / "dataset_card.md").read_text()
    assert "# Dataset card: CatMeows" in card and "zenodo.4008297" in card
    assert "| B | content | 8 |" in card and "| ANI01 | 6 |" in card
    assert "| malformed name | 1 |" in card
    assert "`dataset/meow_of_unknown_origin.wav` | name does not follow C_NNNNN" in card


def test_catmeows_mapping_file_relabels_and_excludes(tmp_path) -> None:
    root = make_catmeows(tmp_path / "src", per_context=1)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("labels: {B: content, F: playful, I: null}\nconfidence: 0.7\n")
    import_dataset("catmeows", root, tmp_path / "out", mapping)
    records = _records(tmp_path / "out").values()
    assert sorted({r["label"] for r in records}) == ["content", "playful"]
    assert {r["response"]["confidence"] for r in records} == {0.7}
    skipped = _skipped(tmp_path / "out")
    assert len(skipped) == 4 and set(skipped.values()) == {"excluded by mapping"}
    assert "| I | (excluded) | 0 |" in (tmp_path / "out" / "dataset_card.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("labels: {B: content}\ncolour: red\n", "unknown keys ['colour']"),
        ("confidence: 0.5\n", "needs a 'labels:' table"),
        ("labels: {B: content}\nconfidence: 2\n", "confidence must be a number in [0, 1]"),
        ("labels: {}\nsubject_pattern: '^(.*)$'\n", "named group (?P<subject>"),
    ],
)
def test_bad_mapping_files_are_one_line_errors(tmp_path, text, message) -> None:
    (tmp_path / "map.yaml").write_text(text)
    (tmp_path / "src").mkdir()
    with pytest.raises(DataImportError, match=None) as err:
        import_dataset("catmeows", tmp_path / "src", tmp_path / "out", tmp_path / "map.yaml")
    assert message in str(err.value) and "map.yaml" in str(err.value)


def test_cli_import_prints_counts_and_refuses_a_non_empty_out(tmp_path, capsys) -> None:
    root = make_catmeows(tmp_path / "src", per_context=1)
    out = tmp_path / "out"
    assert main(["data", "import", "catmeows", str(root), "--out", str(out), "--copy"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 12 and summary["subjects"] == 4 and summary["skipped"] == {}
    media = out / "media" / "dataset" / "B_ANI01_MC_FN_SIM01_101.wav"
    assert media.stat().st_nlink == 1  # --copy: a copy, not a link to the source
    assert main(["data", "import", "catmeows", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --out {out} is not empty; choose a new folder or remove it"]


def test_import_hard_links_by_default(tmp_path) -> None:
    root = make_catmeows(tmp_path / "src", cats=CATS_ONE, per_context=1)
    import_dataset("catmeows", root, tmp_path / "out")
    media = tmp_path / "out" / "media" / "dataset" / "B_ANI01_MC_FN_SIM01_101.wav"
    assert media.samefile(root / "dataset" / "B_ANI01_MC_FN_SIM01_101.wav")


CATS_ONE = (("ANI01", "MC", "FN", "SIM01"),)


# ----------------------------------------------------------------------------- catsound


def test_source_prefix_rule() -> None:
    assert source_prefix("kitten7_03", "Happy") == "kitten7"
    assert source_prefix("kitten7 (3)", "Happy") == "kitten7"
    assert source_prefix("angry_12", "Angry") is None  # only the class name: unknown
    assert source_prefix("17", "Angry") is None
    assert source_prefix("noise", "Angry") == "noise"


def test_catsound_maps_the_ten_classes_and_reports_the_rest(tmp_path) -> None:
    root = make_catsound(tmp_path / "src")
    write_wav(root / "Purring" / "p_01.wav")  # not one of the ten classes
    write_wav(root / "Angry" / "angry_7.wav")  # prefix = class name: its own subject
    write_wav(root / "stray.wav")  # outside any class folder
    (root / "Happy" / "notes.txt").write_text("x")
    out = tmp_path / "out"
    result = import_dataset("catsound", root, out)
    records = _records(out)
    assert len(records) == 21
    assert read_manifest(out / "all.jsonl", list(DEFAULT_LABELS))
    by_class = {r["meta"]["source_label"]: r["label"] for r in records.values()}
    assert by_class == {
        "Angry": "aggressive",
        "Defence": "fearful",
        "Fighting": "aggressive",
        "Happy": "content",
        "HuntingMind": "curious",
        "Mating": "demanding",
        "MotherCall": "demanding",
        "Paining": "in_pain",
        "Resting": "content",
        "Warning": "aggressive",
    }
    pain = records["Paining-clip7_01"]
    assert pain["subject_id"] == "clip7" and pain["meta"]["subject_from"] == "prefix"
    assert pain["response"]["welfare_alert"] is True
    assert pain["response"]["evidence"]["vocalization"] == "pain cry"
    lonely = records["Angry-angry_7"]
    assert lonely["subject_id"] == "Angry/angry_7" and lonely["meta"]["subject_from"] == "file"
    assert _skipped(out) == {
        "Purring/p_01.wav": "unknown label",
        "stray.wav": "outside a label folder",
        "Happy/notes.txt": "not media",
    }
    assert result.summary()["subjects"] == 11
    assert "# Dataset card: CatSound" in (out / "dataset_card.md").read_text()


def test_catsound_subject_pattern_from_the_mapping(tmp_path) -> None:
    root = tmp_path / "src"
    write_wav(root / "Happy" / "tom-a_1.wav")
    write_wav(root / "Happy" / "tom-b_2.wav")
    (tmp_path / "map.yaml").write_text(
        "labels: {Happy: content}\nsubject_pattern: '^(?P<subject>[a-z]+)-'\n"
    )
    import_dataset("catsound", root, tmp_path / "out", tmp_path / "map.yaml")
    assert {r["subject_id"] for r in _records(tmp_path / "out").values()} == {"tom"}


# ----------------------------------------------------------------------------- folders


def test_folders_pairs_by_stem_and_takes_subjects_from_subfolders(tmp_path) -> None:
    root = tmp_path / "src"
    write_png(root / "fearful" / "a.png")
    write_wav(root / "fearful" / "a.wav")  # pairs with a.png
    write_png(root / "fearful" / "a.jpg")  # two images for stem a: the first by name wins
    write_wav(root / "content" / "tom" / "b.wav")
    write_png(root / "content" / "tom" / "c.png")
    write_png(root / "loose.png")
    out = tmp_path / "out"
    import_dataset("folders", root, out)
    records = _records(out)
    assert set(records) == {"fearful-a", "content-tom-b", "content-tom-c"}
    pair = records["fearful-a"]
    assert (pair["image"], pair["audio"]) == ("media/fearful/a.jpg", "media/fearful/a.wav")
    assert pair["response"]["modalities"] == ["image", "audio"] and pair["subject_id"] is None
    assert pair["instruction"] == "How does this cat feel?"
    assert records["content-tom-c"]["subject_id"] == "tom"
    assert records["content-tom-c"]["instruction"] == "Look at this cat. How is it feeling?"
    assert _skipped(out) == {
        "fearful/a.png": "duplicate stem",
        "loose.png": "outside a label folder",
    }
    assert len(read_manifest(out / "all.jsonl", list(DEFAULT_LABELS))) == 3


def test_folders_with_a_mapping_reports_unknown_labels_and_odd_labels_in_the_card(
    tmp_path,
) -> None:
    root = tmp_path / "src"
    write_wav(root / "hungry" / "x.wav")
    write_wav(root / "sleepy" / "y.wav")
    write_png(root / "broken" / "z.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "map.yaml").write_text("labels: {hungry: demanding, broken: content}\n")
    import_dataset("folders", root, tmp_path / "out", tmp_path / "map.yaml")
    assert [r["label"] for r in _records(tmp_path / "out").values()] == ["demanding"]
    assert _skipped(tmp_path / "out") == {
        "sleepy/y.wav": "unknown label",
        "broken/z.png": "undecodable",
    }
    # without a mapping each folder is its own label; labels outside the set are flagged
    import_dataset("folders", root, tmp_path / "out2")
    card = (tmp_path / "out2" / "dataset_card.md").read_text()
    assert "Not in the default label set: hungry, sleepy" in card


def test_unknown_kind_and_missing_source_are_one_line_errors(tmp_path, capsys) -> None:
    with pytest.raises(DataImportError, match="unknown data set kind 'dogs'"):
        import_dataset("dogs", tmp_path, tmp_path / "out")
    assert main(["data", "import", "catsound", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert "source folder not found" in capsys.readouterr().err
