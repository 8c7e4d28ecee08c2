"""``purrsight predict --inputs``: folder and manifest discovery (pairing by stem, order,
what is an error), the batch job on a tiny trained bundle (input order, error lines,
``--strict``, ``--resume`` after a kill), and the bundle's ready LLM (same answers as
the adapter path, no transformers on the way, older bundles still load)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from purrsight.cli import main
from purrsight.data.batch_inputs import InputsError, discover, from_folder
from purrsight.inference.bundle import load_bundle
from purrsight.inference.bundle_manifest import MANIFEST, READY_DIR
from purrsight.inference.errors import InputError
from purrsight.inference.predictor import Predictor
from purrsight.jobs.predict_batch import predict_batch, read_done, summarize
from test_inference import bundle, trained  # noqa: F401 - module fixtures used here
from video_fixture import write_test_video

# ----------------------------------------------------------------------------- media


def _png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def _wav(path: Path, hz: float, seconds: float = 0.6, rate: int = 16000) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.4 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return path


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- discovery


def test_a_folder_pairs_image_and_sound_by_stem_in_path_order(tmp_path) -> None:
    for name in ("b.jpg", "b.wav", "a.png", "c.ogg", "sub/a.png", "sub/a.flac", "clip.mp4"):
        _touch(tmp_path / name, b"x")
    _touch(tmp_path / ".hidden.png", b"x")
    _touch(tmp_path / ".cache/x.png", b"x")
    items = from_folder(tmp_path)
    assert [i.id for i in items] == ["a", "b", "c", "clip.mp4", "sub/a"]
    by_id = {i.id: i for i in items}
    assert by_id["b"].shown == {"image": "b.jpg", "audio": "b.wav"}
    assert (by_id["a"].image, by_id["a"].audio) == (tmp_path / "a.png", None)
    assert (by_id["c"].image, by_id["c"].audio) == (None, tmp_path / "c.ogg")
    assert by_id["clip.mp4"].video == tmp_path / "clip.mp4"
    assert by_id["sub/a"].shown == {"image": "sub/a.png", "audio": "sub/a.flac"}
    assert all(i.error is None for i in items)


def test_a_video_and_a_photo_of_one_stem_are_two_inputs(tmp_path) -> None:
    for name in ("tom.mp4", "tom.jpg", "tom.wav"):
        _touch(tmp_path / name, b"x")
    assert [i.id for i in from_folder(tmp_path)] == ["tom", "tom.mp4"]


def test_what_cannot_be_an_input_is_listed_with_its_error(tmp_path) -> None:
    for name in ("a.png", "a.jpg", "a.wav", "notes.txt", "README", "b.wav"):
        _touch(tmp_path / name, b"x")
    items = {i.id: i for i in from_folder(tmp_path)}
    assert items["a"].error_kind == "ambiguous_stem"
    assert "a.jpg" in items["a"].error and "a.png" in items["a"].error
    assert items["notes.txt"].error_kind == "unsupported_type"
    assert items["notes.txt"].error.startswith("notes.txt: not an image, sound or video")
    assert items["README"].error_kind == "unsupported_type"
    assert items["b"].error is None


def test_the_runs_own_output_files_are_not_inputs(tmp_path) -> None:
    _touch(tmp_path / "a.png", b"x")
    _touch(tmp_path / "results.jsonl", b"{}\n")
    _touch(tmp_path / "results.csv", b"id\n")
    out = tmp_path / "results.jsonl"
    assert [i.id for i in discover(tmp_path, [out, out.with_suffix(".csv")])] == ["a"]


def test_a_manifest_keeps_its_order_ids_labels_and_notes(tmp_path) -> None:
    _touch(tmp_path / "img/1.png", b"x")
    _touch(tmp_path / "aud/1.wav", b"x")
    lines = [
        {"id": "z", "image": "img/1.png", "audio": "aud/1.wav", "label": "content"},
        {"id": "a", "audio": "aud/1.wav", "text": "she hides", "response": "A calm cat."},
        {"id": "bad"},
        "not json",
        {"id": "up", "image": "../outside.png"},
        {"id": "z", "image": "img/1.png"},
    ]
    manifest = tmp_path / "in.jsonl"
    manifest.write_text(
        "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n\n"
    )
    items = discover(manifest)
    assert [i.id for i in items] == ["z", "a", "line-3", "line-4", "line-5", "line-6"]
    assert items[0].label == "content" and items[0].shown == {
        "image": "img/1.png",
        "audio": "aud/1.wav",
    }
    assert items[1].text == "she hides" and items[1].image is None
    assert "at least one of image, audio, video" in items[2].error
    assert items[3].error_kind == "malformed_json" and f"{manifest}:4" in items[3].error
    assert items[4].error_kind == "path_outside"
    assert items[5].error_kind == "duplicate_id"


def test_inputs_that_are_not_there_are_refused(tmp_path) -> None:
    with pytest.raises(InputsError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(InputsError, match="holds no files"):
        discover(tmp_path)
    with pytest.raises(InputsError, match="neither a folder"):
        discover(_touch(tmp_path / "x.csv", b"x"))


# ----------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """5 good inputs (pairs, a lone image, a lone sound, a video) and 3 bad files."""
    root = tmp_path_factory.mktemp("batch_inputs")
    _png(root / "cat1.png", 1)
    _wav(root / "cat1.wav", 500)
    _png(root / "cat2.png", 2)
    _wav(root / "cat3.wav", 700)
    write_test_video(root / "clip.mp4")
    _png(root / "zz.png", 3)
    _wav(root / "zz.wav", 900)
    _touch(root / "broken.png", b"\x89PNG\r\n\x1a\n not really a png")
    _touch(root / "empty.wav")
    _touch(root / "notes.txt", b"feed at 6")
    return root


GOOD = ["cat1", "cat2", "cat3", "clip.mp4", "zz"]
BAD = {"broken": "undecodable_media", "empty": "empty_media", "notes.txt": "unsupported_type"}
ORDER = ["broken", "cat1", "cat2", "cat3", "clip.mp4", "empty", "notes.txt", "zz"]


@pytest.fixture(scope="module")
def ready_predictor(bundle):  # noqa: F811
    return Predictor.from_bundle(bundle, precision="32")


def test_every_input_gets_one_line_in_order_and_bad_files_error_lines(
    ready_predictor, folder, tmp_path
) -> None:
    out = tmp_path / "results.jsonl"
    result = predict_batch(
        ready_predictor, discover(folder), out, mode="labels", batch_size=3, overlap=True
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ORDER
    errors = {line["id"]: line for line in lines if "error" in line}
    assert {k: v["error_kind"] for k, v in errors.items()} == BAD
    for line in errors.values():  # each error names its file
        assert next(iter(line["files"].values())) in line["error"], line
    answered = [line for line in lines if "report" in line]
    assert [line["id"] for line in answered] == GOOD
    assert {line["status"] for line in answered} == {"labels"}
    by_id = {line["id"]: line for line in answered}
    assert by_id["cat1"]["report"]["modalities"] == ["image", "audio"]
    assert by_id["clip.mp4"]["report"]["modalities"] == ["video"]
    assert (result.written, result.errors) == (8, 3)
    assert result.summary["errors"] == 3 and result.summary["answered"] == 5
    assert sum(result.summary["emotions"].values()) == 5


def test_batched_answers_are_the_one_at_a_time_answers(ready_predictor, folder, tmp_path) -> None:
    out = tmp_path / "r.jsonl"
    predict_batch(ready_predictor, discover(folder), out, mode="labels", batch_size=4)
    lines = {line["id"]: line for line in read_done(out)[0].values() if "report" in line}
    single = ready_predictor.predict(
        image=folder / "cat1.png", audio=folder / "cat1.wav", mode="labels"
    )
    for label, p in single.probabilities.items():
        assert lines["cat1"]["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_resume_after_a_kill_finishes_without_duplicates_or_gaps(
    ready_predictor, folder, tmp_path
) -> None:
    out = tmp_path / "r.jsonl"
    predict_batch(ready_predictor, discover(folder), out, mode="labels", batch_size=2)
    complete = out.read_text().splitlines()
    # A run killed after 3 lines, in the middle of writing the 4th.
    out.write_text("\n".join(complete[:3]) + "\n" + complete[3][:25])
    result = predict_batch(ready_predictor, discover(folder), out, mode="labels", resume=True)
    lines = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ORDER
    assert lines[:3] == complete[:3]
    assert (result.resumed, result.written) == (3, 5)
    # Nothing left: a second resume writes nothing.
    again = predict_batch(ready_predictor, discover(folder), out, mode="labels", resume=True)
    assert again.written == 0 and out.read_text().splitlines() == lines


def test_an_existing_output_needs_resume_or_overwrite_and_the_same_mode(
    ready_predictor, folder, tmp_path
) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"id": "cat1", "mode": "labels", "report": {}}) + "\n")
    with pytest.raises(InputError, match="--resume"):
        predict_batch(ready_predictor, discover(folder), out, mode="labels")
    with pytest.raises(InputError, match="--mode labels"):
        predict_batch(ready_predictor, discover(folder), out, mode="report", resume=True)
    result = predict_batch(ready_predictor, discover(folder), out, mode="labels", overwrite=True)
    assert result.written == len(ORDER)


def test_cli_batch_writes_jsonl_csv_summary_and_exit_codes(bundle, folder, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "results.jsonl"
    argv = ["predict", "--model", str(bundle), "--inputs", str(folder), "--out", str(out)]
    assert main([*argv, "--mode", "labels"]) == 0
    printed = capsys.readouterr().out
    assert "inputs 8: answered 5, errors 3" in printed and "verdicts: sure" in printed
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("id,image,audio,video,label,emotion,confidence")
    assert [r.split(",")[0] for r in rows[1:]] == ORDER
    # --strict: the same run fails when an input did.
    assert main([*argv, "--mode", "labels", "--overwrite", "--strict"]) == 1
    capsys.readouterr()
    assert main([*argv, "--image", str(folder / "cat1.png")]) == 2
    assert "--inputs takes the media" in capsys.readouterr().err


def test_the_summary_counts_emotions_verdicts_errors_and_accuracy() -> None:
    lines = [
        {
            "id": "a",
            "label": "content",
            "report": {"emotion": "content"},
            "probabilities": {"content": 0.9, "in_pain": 0.1},
        },
        {
            "id": "b",
            "label": "in_pain",
            "report": {"emotion": "unsure", "welfare_alert": True},
            "probabilities": {"content": 0.35, "in_pain": 0.3},
        },
        {"id": "c", "error": "c.png: file is empty", "error_kind": "empty_media"},
    ]
    s = summarize(lines)
    assert s["emotions"] == {"content": 1, "unsure": 1}
    assert s["verdicts"] == {"sure": 1, "unsure": 1, "welfare_alert": 1}
    assert s["error_kinds"] == {"empty_media": 1}
    assert (s["labelled"], s["accuracy"]) == (2, 0.5)


# ----------------------------------------------------------------------------- ready LLM


def test_the_export_writes_a_ready_llm_that_answers_as_the_adapter_does(bundle, folder) -> None:  # noqa: F811
    info = json.loads((bundle / MANIFEST).read_text())
    assert info["ready"]["files"] == {
        "bfloat16": "llm.bf16.safetensors",
        "float32": "llm.fp32.safetensors",
    }
    ready = Predictor.from_bundle(bundle, precision="32")
    assert type(ready.bundle.model.llm).__name__ == "LiteDecoder"
    slow = Predictor(load_bundle(bundle, dtype=torch.float32, use_ready=False))
    assert type(slow.bundle.model.llm).__name__ != "LiteDecoder"
    request = {"image": folder / "cat1.png", "audio": folder / "cat1.wav"}
    for mode in ("labels", "report"):
        a, b = ready.predict(**request, mode=mode), slow.predict(**request, mode=mode)
        for label, p in a.probabilities.items():
            assert b.probabilities[label] == pytest.approx(p, abs=1e-5)
        assert a.raw_text == b.raw_text


def test_a_ready_bundle_predicts_without_transformers_peft_or_scipy(bundle) -> None:  # noqa: F811
    code = f"""
import sys, torch
from purrsight.inference.predictor import Predictor, Prepared
p = Predictor.from_bundle({str(bundle)!r}, precision="32")
e = p.bundle.manifest.projectors.in_dim
f = torch.nn.functional.normalize(torch.ones(e), dim=-1)
prepared = Prepared({{"image": f, "audio": f}}, ["image", "audio"], p.settings.instruction)
p.predict_prepared([prepared], mode="report")
heavy = ("transformers", "peft", "scipy", "lightning", "mlflow", "fastapi", "librosa", "numba")
print(",".join(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_a_bundle_of_an_older_export_loads_and_can_be_upgraded(bundle, tmp_path, caplog) -> None:  # noqa: F811
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    info = json.loads((old / MANIFEST).read_text())
    del info["ready"]
    (old / MANIFEST).write_text(json.dumps(info))
    shutil.rmtree(old / READY_DIR)
    caplog.set_level(logging.INFO, logger="purrsight")
    loaded = load_bundle(old, dtype=torch.float32)
    assert type(loaded.model.llm).__name__ != "LiteDecoder"
    assert "export --upgrade" in caplog.text
    assert main(["export", "--upgrade", str(old)]) == 0
    assert (
        json.loads((old / MANIFEST).read_text())["ready"]
        == json.loads((bundle / MANIFEST).read_text())["ready"]
    )
    assert type(load_bundle(old).model.llm).__name__ == "LiteDecoder"


def test_a_ready_bundle_missing_its_weights_names_the_fix(bundle, tmp_path) -> None:  # noqa: F811
    import shutil

    from purrsight.inference.errors import BundleError

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / READY_DIR / "llm.fp32.safetensors").unlink()
    with pytest.raises(BundleError, match="export the bundle again"):
        load_bundle(broken, dtype=torch.float32)
