"""`purrsight data split`: no subject in two splits, every sample once, stratified, seeded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_fixtures import make_catmeows
from purrsight.cli import main
from purrsight.data.importers import import_dataset
from purrsight.data.manifest import ManifestError, read_manifest
from purrsight.data.split import parse_ratios, split_file, split_records

RATIOS = st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.5), (0.7, 0.3, 0.0), (0.34, 0.33, 0.33)])
RECORDS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from([f"cat{i}" for i in range(12)])),
        st.sampled_from(["content", "fearful", "demanding", None]),
    ),
    min_size=1,
    max_size=80,
)


def _records(rows) -> list[dict]:
    return [
        {"id": f"s{i}", "subject_id": subject, "label": label, "audio": "a.wav"}
        for i, (subject, label) in enumerate(rows)
    ]


@settings(max_examples=200, deadline=None)
@given(rows=RECORDS, ratios=RATIOS, seed=st.integers(0, 2**16))
def test_no_subject_in_two_splits_and_every_sample_exactly_once(rows, ratios, seed) -> None:
    records = _records(rows)
    parts, _ = split_records(records, "subject_id", ratios, seed)
    assert len(parts) == len(ratios)
    ids = [r["id"] for part in parts for r in part]
    assert sorted(ids) == sorted(r["id"] for r in records)  # all assigned, none twice
    home: dict[str, int] = {}
    for index, part in enumerate(parts):
        for record in part:
            if record["subject_id"] is not None:
                assert home.setdefault(record["subject_id"], index) == index
    for ratio, part in zip(ratios, parts, strict=True):
        assert ratio > 0 or not part  # a zero ratio gets nothing
    again, _ = split_records(records, "subject_id", ratios, seed)
    assert again == parts  # deterministic for a seed


def test_split_is_stratified_as_far_as_groups_allow() -> None:
    # 10 cats per label, one label each, 3 samples a cat: 0.8/0.1/0.1 can give val and
    # test one cat of each label, and that is what a stratified split must do.
    rows = [(f"{label}{c}", label) for label in ("content", "fearful") for c in range(10)]
    records = _records([row for row in rows for _ in range(3)])
    for seed in range(5):
        parts, _ = split_records(records, "subject_id", (0.8, 0.1, 0.1), seed)
        counts = [Counter(r["label"] for r in part) for part in parts]
        assert counts == [
            Counter(content=24, fearful=24),
            Counter(content=3, fearful=3),
            Counter(content=3, fearful=3),
        ]
    seeds = {
        tuple(r["id"] for r in split_records(records, "subject_id", (0.8, 0.1, 0.1), s)[0][1])
        for s in range(5)
    }
    assert len(seeds) > 1  # the seed chooses which cats


def test_every_split_gets_a_group_when_there_are_enough() -> None:
    records = _records([("big", "content")] * 50 + [("a", "content"), ("b", "fearful")])
    parts, _ = split_records(records, "subject_id", (0.8, 0.1, 0.1), 0)
    assert all(parts)


@pytest.mark.parametrize("text", ["0.8,0.3", "1", "a,b", "0,0.5,0.5", "0.5,0.2,0.2,0.1"])
def test_bad_ratios_are_refused(text) -> None:
    with pytest.raises(ManifestError, match="--ratios"):
        parse_ratios(text)


@pytest.fixture()
def imported(tmp_path) -> Path:
    cats = [(f"C{i:04d}", "EU", "FN", f"OW{i % 3:03d}") for i in range(10)]
    root = make_catmeows(tmp_path / "src", cats=cats, per_context=1, seconds=0.2)
    import_dataset("catmeows", root, tmp_path / "imported")
    return tmp_path / "imported" / "all.jsonl"


def test_cli_split_writes_splits_and_a_leakage_report(imported, capsys) -> None:
    args = ["data", "split", str(imported), "--by", "subject_id", "--seed", "3"]
    assert main([*args, "--ratios", "0.8,0.1,0.1"]) == 0
    printed = capsys.readouterr().out
    assert "groups in more than one split: 0" in printed
    assert "identical media files in more than one split: 0" in printed
    folder = imported.parent
    splits = {n: read_manifest(folder / f"{n}.jsonl") for n in ("train", "val", "test")}
    assert sum(len(s) for s in splits.values()) == 30
    subjects = [{s.subject_id for s in split} for split in splits.values()]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    report = json.loads((folder / "split_report.json").read_text())
    assert report["groups_in_several_splits"] == [] and report["seed"] == 3
    assert report["splits"]["train"]["groups"] == 8
    assert report["splits"]["val"]["labels"] == {"content": 1, "demanding": 1, "fearful": 1}
    first = (folder / "train.jsonl").read_text()
    assert main([*args, "--ratios", "0.8,0.1,0.1"]) == 0  # same seed, same files
    assert (folder / "train.jsonl").read_text() == first


def test_split_by_a_meta_key_and_into_a_folder_above(imported, tmp_path) -> None:
    report = split_file(imported, "meta.owner", (0.5, 0.5), 0, out=tmp_path)
    assert report["groups_in_several_splits"] == []
    owners = [
        {json.loads(line)["meta"]["owner"] for line in (tmp_path / f"{n}.jsonl").open()}
        for n in ("train", "val")
    ]
    assert not owners[0] & owners[1]
    train = read_manifest(tmp_path / "train.jsonl")  # paths rebased: imported/media/...
    assert all(s.audio.is_file() for s in train)


def test_split_refuses_an_out_folder_the_media_would_leave(imported, tmp_path) -> None:
    with pytest.raises(ManifestError, match="would lie outside it"):
        split_file(imported, out=imported.parent / "splits")


def test_duplicate_media_across_splits_are_reported(tmp_path) -> None:
    (tmp_path / "a.wav").write_bytes(b"same bytes")
    (tmp_path / "b.wav").write_bytes(b"same bytes")
    rows = [
        {"id": "x", "audio": "a.wav", "response": "r", "label": "content", "subject_id": "tom"},
        {"id": "y", "audio": "b.wav", "response": "r", "label": "content", "subject_id": "kit"},
    ]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = split_file(tmp_path / "all.jsonl", ratios=(0.5, 0.5))
    assert report["identical_media_in_several_splits"] == [
        {"files": ["a.wav", "b.wav"], "splits": ["train", "val"]}
    ]
