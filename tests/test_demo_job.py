"""The main job (`make demo`) end to end with tiny models: every stage runs, the summary
holds each part, and the test split's generated reports and metrics are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from purrsight.config import load_config
from purrsight.inference.reading import absent_cue_words
from purrsight.jobs.demo import run_demo
from qwen_fixture import byte_tokenizer, tiny_llama


def tiny_demo_overrides(root: Path, tiny_encoder_dirs: dict[str, Path]) -> list[str]:
    """``--set`` overrides that make ``purrsight demo`` run on tiny models under ``root``
    (also used by the progress test that runs the demo as a subprocess)."""
    llm = root / "tiny-llama"
    tokenizer = byte_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    data = root / "data"
    return [
        *(f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in tiny_encoder_dirs),
        f"llm_model_name={llm}",
        f"data_dir={data}",
        f"phase1.data_dir={data}",
        f"phase1.output_dir={root / 'alignment'}",
        "phase1.epochs=1",
        "phase1.batch_size=8",
        "phase1.embed_dim=16",
        "phase1.head_hidden_dim=32",
        f"output_dir={root / 'outputs'}",
        f"demo.summary_path={root / 'outputs' / 'demo' / 'summary.json'}",
        "demo.n=28",
        "num_epochs=1",
        "batch_size=4",
        "lora_r=4",
        "lora_alpha=8",
        "num_soft_tokens=2",
        "projector_hidden_dim=16",
        "max_text_length=600",
        "max_new_tokens=8",
        "preview_samples=0",
        "num_workers=0",
    ]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_encoder_dirs):
    root = tmp_path_factory.mktemp("demo")
    overrides = [
        *tiny_demo_overrides(root, tiny_encoder_dirs),
        f"mlflow.tracking_uri={root / 'mlruns'}",
        "precision=32",
        "feature_cache=true",  # as config/demo.yaml: Phase 2 and the reports read it
        f"feature_cache_dir={root / 'cache'}",
    ]
    config = load_config(None, overrides)
    return root, run_demo(config, None)


def test_summary_has_every_stage(demo_run) -> None:
    root, summary = demo_run
    on_disk = json.loads((root / "outputs" / "demo" / "summary.json").read_text())
    assert on_disk == summary
    assert summary["data"]["n"] == 28
    for key in ("i2t_r1", "a2t_r1", "i2a_r1", "chance_r1", "zero_shot_acc", "seconds"):
        assert key in summary["phase1"], key
    for key in ("loss_first", "loss_last", "seconds", "checkpoint"):
        assert key in summary["phase2"], key
    assert summary["total_seconds"] >= summary["phase2"]["seconds"]
    assert Path(summary["phase2"]["checkpoint"]).name == "last.ckpt"
    assert any((root / "cache" / "aligned").rglob("*.safetensors"))
    evaluate = summary["evaluate"]
    for key in ("macro_f1", "accuracy", "ece", "image_only_macro_f1", "audio_only_macro_f1"):
        assert 0.0 <= evaluate[key] <= 1.0, key
    assert evaluate["report_valid_rate"] == 1.0  # the reading heads fix the whole answer
    assert set(evaluate["cue_accuracy"]) <= {"ears", "eyes", "tail", "posture", "vocalization"}
    assert evaluate["cue_accuracy"], "the demo data records cues: their accuracy is reported"
    low, high = evaluate["macro_f1_interval"]
    assert low <= evaluate["macro_f1"] <= high
    assert "where the time went" not in summary  # printed, not stored


def test_the_bundle_is_exported_with_reading_heads_and_evaluated(demo_run) -> None:
    root, summary = demo_run
    demo = root / "outputs" / "demo"
    manifest = json.loads((demo / "bundle" / "purrsight.json").read_text())
    assert manifest["reading"]["heads"][0]["name"] == "emotion"
    assert (demo / "bundle" / manifest["reading"]["file"]).is_file()
    assert summary["export"]["bundle"] == str(demo / "bundle")
    for name in ("metrics.json", "report.md", "confusion_matrix.png", "reliability.png"):
        assert (demo / "evaluate" / name).stat().st_size > 0, name


def test_every_test_sample_gets_a_report_naming_only_what_was_given(demo_run) -> None:
    root, summary = demo_run
    out = root / "outputs" / "demo" / "evaluate"
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    test_lines = [json.loads(x) for x in (root / "data" / "test.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [t["id"] for t in test_lines]
    assert summary["evaluate"]["test_samples"] == len(test_lines)
    for line, sample in zip(lines, test_lines, strict=True):
        report = line["report_json"]
        assert (
            report["emotion"] == line["label_scoring"]["predicted"] or report["emotion"] == "unsure"
        )
        evidence = report["evidence"]
        if sample.get("image") is None:
            assert all(evidence[c] is None for c in ("ears", "eyes", "tail", "posture"))
        if sample.get("audio") is None:
            assert evidence["vocalization"] is None
        given = [m for m in ("image", "audio") if sample.get(m) is not None]
        text = f"{report['summary']} {report['advice']}"
        assert absent_cue_words(text, given) == [], (sample["id"], text)
        assert report["subject"] in ("cat", "no_cat", "unsure") and report["subject_reason"]
