"""Tests of the procedural demo data generator (purrsight.data.demo)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter

from purrsight.data.demo import (
    SOUND_KINDS,
    SPLITS,
    _max_filter,
    draw_cat,
    generate_demo_dataset,
    make_contact_sheet,
    random_appearance,
    synth_vocalization,
)
from purrsight.report import Report
from purrsight.vocabulary import DEFAULT_LABELS

# Small media keep the tests fast; the generator's logic does not depend on the sizes.
SMALL = {"image_size": 64, "audio_seconds": 0.6, "sample_rate": 16000}
RECORD_KEYS = {"id", "image", "audio", "video", "instruction", "response", "label", "subject_id"}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _power_centroid(x: np.ndarray, sr: int) -> float:
    """Spectral centroid of the whole clip, weighted by power."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / sr)
    return float((freqs * power).sum() / power.sum())


@pytest.fixture(scope="module")
def demo70(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo70")
    summary = generate_demo_dataset(out, 70, seed=3, **SMALL)
    return out, summary


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_demo_dataset(a, 14, seed=5, **SMALL)
    generate_demo_dataset(b, 14, seed=5, **SMALL)
    generate_demo_dataset(c, 14, seed=6, **SMALL)
    hashes = _tree_hashes(a)
    assert len(hashes) > 4 + 14  # 4 JSONL files plus the media
    assert hashes == _tree_hashes(b)
    assert (a / "all.jsonl").read_bytes() != (c / "all.jsonl").read_bytes()


def test_parallel_workers_write_the_same_files_as_one_process(demo70, tmp_path):
    out, _ = demo70  # 70 samples: past the size where workers are used
    serial = tmp_path / "serial"
    generate_demo_dataset(serial, 70, seed=3, workers=1, **SMALL)
    assert _tree_hashes(serial) == _tree_hashes(out)


def test_every_record_follows_the_schema(demo70):
    out, _ = demo70
    records = _read_jsonl(out / "all.jsonl")
    assert len(records) == 70
    assert len({r["id"] for r in records}) == 70
    for rec in records:
        assert set(rec) == RECORD_KEYS
        assert rec["label"] in DEFAULT_LABELS
        assert rec["video"] is None
        assert rec["image"] or rec["audio"]
        report = Report.model_validate(rec["response"])
        assert report.emotion == rec["label"]
        assert report.confidence + sum(a.p for a in report.alternatives) <= 1.0
        assert 1 <= len(report.alternatives) <= 2
        assert all(a.emotion != rec["label"] for a in report.alternatives)
        assert report.summary and report.advice and rec["instruction"]
        present = [m for m in ("image", "audio") if rec[m]]
        assert report.modalities == present
        assert (report.evidence.vocalization is not None) == bool(rec["audio"])
        assert (report.evidence.posture is not None) == bool(rec["image"])
        if rec["label"] == "in_pain":
            assert report.welfare_alert and "vet" in report.advice.lower()
        for key in ("image", "audio"):
            if rec[key]:
                assert not Path(rec[key]).is_absolute() and ".." not in rec[key]
                assert (out / rec[key]).is_file()


def test_media_have_the_requested_format(demo70):
    out, _ = demo70
    rec = next(r for r in _read_jsonl(out / "all.jsonl") if r["image"] and r["audio"])
    with Image.open(out / rec["image"]) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)
    info = sf.info(str(out / rec["audio"]))
    assert info.subtype == "PCM_16" and info.channels == 1
    assert info.samplerate == 16000 and info.frames == int(0.6 * 16000)


def test_splits_are_grouped_by_subject_and_cover_every_label(demo70):
    out, summary = demo70
    split_records = {s: _read_jsonl(out / f"{s}.jsonl") for s in SPLITS}
    subjects = {s: {r["subject_id"] for r in recs} for s, recs in split_records.items()}
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    for split, recs in split_records.items():
        assert {r["label"] for r in recs} == set(DEFAULT_LABELS), split
        assert summary["splits"][split] == len(recs)
    all_ids = sorted(r["id"] for r in _read_jsonl(out / "all.jsonl"))
    assert sorted(r["id"] for recs in split_records.values() for r in recs) == all_ids
    assert summary["n"] == 70 and summary["subjects"] == 4 * len(DEFAULT_LABELS)
    assert summary["labels"] == dict.fromkeys(DEFAULT_LABELS, 10)


def test_every_label_reaches_small_splits(tmp_path):
    # With 10 samples per label a 5% split would round to nothing for most labels; the
    # generator must still give every split every label.
    generate_demo_dataset(tmp_path, 70, seed=1, split_ratios=(0.9, 0.05, 0.05), **SMALL)
    for split in SPLITS:
        labels = {r["label"] for r in _read_jsonl(tmp_path / f"{split}.jsonl")}
        assert labels == set(DEFAULT_LABELS), split


def test_a_cat_shows_several_emotions(demo70):
    out, _ = demo70
    per_cat: dict[str, set[str]] = {}
    for rec in _read_jsonl(out / "all.jsonl"):
        per_cat.setdefault(rec["subject_id"], set()).add(rec["label"])
    assert max(len(v) for v in per_cat.values()) >= 2


def test_some_samples_miss_a_modality(demo70):
    out, _ = demo70
    records = _read_jsonl(out / "all.jsonl")
    image_only = [r for r in records if r["audio"] is None]
    audio_only = [r for r in records if r["image"] is None]
    assert len(image_only) == 7 and len(audio_only) == 7
    for rec in image_only:
        assert rec["response"]["modalities"] == ["image"]
        assert not (out / "aud" / (rec["id"][2:] + ".wav")).exists()
    for rec in audio_only:
        assert rec["response"]["modalities"] == ["audio"]
        assert rec["response"]["evidence"]["ears"] is None
        assert not (out / "img" / (rec["id"][2:] + ".png")).exists()


def test_cues_overlap_between_labels(demo70):
    # No cue value may belong to one label only across the whole table: check on the data that
    # at least some postures and ear states occur under several labels.
    out, _ = demo70
    labels_by_cue: dict[tuple[str, str], set[str]] = {}
    for rec in _read_jsonl(out / "all.jsonl"):
        for key, value in rec["response"]["evidence"].items():
            if value is not None:
                labels_by_cue.setdefault((key, value), set()).add(rec["label"])
    shared = [cue for cue, labs in labels_by_cue.items() if len(labs) >= 2]
    assert len(shared) >= 10


def test_images_of_one_label_differ_and_label_means_differ(demo70):
    out, _ = demo70
    by_label: dict[str, list[np.ndarray]] = {}
    for rec in _read_jsonl(out / "all.jsonl"):
        if rec["image"]:
            with Image.open(out / rec["image"]) as im:
                by_label.setdefault(rec["label"], []).append(np.asarray(im, dtype=np.float32))
    for label, images in by_label.items():
        assert len(images) >= 2, label
        # Two pictures of the same emotion are different scenes, not a template.
        assert np.abs(images[0] - images[1]).mean() > 5.0, label
    means = {label: np.mean(images, axis=0) for label, images in by_label.items()}
    assert np.abs(means["content"] - means["aggressive"]).mean() > 1.0


def test_draw_cat_is_deterministic_and_sized():
    cat = random_appearance(np.random.default_rng(0))
    a = draw_cat(np.random.default_rng(1), "fearful", cat, 96)
    b = draw_cat(np.random.default_rng(1), "fearful", cat, 96)
    c = draw_cat(np.random.default_rng(2), "fearful", cat, 96)
    assert a.size == (96, 96) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("kind", SOUND_KINDS)
def test_every_sound_kind_is_a_valid_clip(kind):
    x = synth_vocalization(np.random.default_rng(0), kind, 1.0, 16000)
    assert x.dtype == np.float32 and x.shape == (16000,)
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1.0
    assert np.abs(x).max() > 0.005  # never silence


def test_hiss_is_much_brighter_than_purr_and_quiet_is_quiet():
    sr = 22050
    for seed in range(5):
        hiss = synth_vocalization(np.random.default_rng(seed), "hiss", 2.5, sr)
        purr = synth_vocalization(np.random.default_rng(seed), "purr", 2.5, sr)
        growl = synth_vocalization(np.random.default_rng(seed), "growl", 2.5, sr)
        meow = synth_vocalization(np.random.default_rng(seed), "meow", 2.5, sr)
        assert _power_centroid(hiss, sr) > 3 * _power_centroid(purr, sr)
        assert _power_centroid(purr, sr) < _power_centroid(growl, sr) < _power_centroid(meow, sr)
        quiet = synth_vocalization(np.random.default_rng(seed), "quiet", 2.5, sr)
        assert np.sqrt(np.mean(quiet**2)) < np.sqrt(np.mean(meow**2))


def test_unknown_sound_kind_is_refused():
    with pytest.raises(ValueError, match="vocalization kind"):
        synth_vocalization(np.random.default_rng(0), "bark", 1.0, 16000)


def test_custom_labels_and_bad_arguments(tmp_path):
    summary = generate_demo_dataset(
        tmp_path / "d", 12, labels=["calm", "angry", "fearful"], n_subjects_per_label=2, **SMALL
    )
    assert summary["labels"] == {"calm": 4, "angry": 4, "fearful": 4}
    for rec in _read_jsonl(tmp_path / "d" / "all.jsonl"):
        report = Report.model_validate(rec["response"])
        assert report.emotion == rec["label"]
        assert all(a.emotion in {"calm", "angry", "fearful"} for a in report.alternatives)
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "e", 0)
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "e", 5, labels=["a", "a"])


def test_contact_sheet_is_written(demo70, tmp_path):
    out, _ = demo70
    png = make_contact_sheet(out, tmp_path / "look" / "sheet.png", max_items=9)
    with Image.open(png) as im:
        assert im.width == 3 * 160 and im.height > 3 * 160


@pytest.mark.parametrize("size", [3, 5, 7])
def test_outline_max_filter_equals_pils(size):
    """The numpy max filter that draws the cats' outline gives PIL's MaxFilter exactly,
    edges included."""
    rng = np.random.default_rng(size)
    mask = Image.new("L", (97, 61), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(-10, 90, 2))
        draw.ellipse((x, y, x + int(rng.integers(2, 40)), y + int(rng.integers(2, 40))), fill=255)
    mask.putpixel((0, 0), 128)  # a corner pixel: edge handling must match too
    expected = np.asarray(mask.filter(ImageFilter.MaxFilter(size)))
    np.testing.assert_array_equal(np.asarray(_max_filter(mask, size)), expected)
