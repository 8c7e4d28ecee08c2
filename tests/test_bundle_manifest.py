"""``purrsight.json`` as a typed model: bundles written by earlier exports load unchanged,
missing settings get the defaults the predictor always used, a bad key is named."""

from __future__ import annotations

import copy
import json
import re

import pytest

from purrsight.config import InferenceConfig, MediaConfig
from purrsight.inference.bundle_manifest import (
    MANIFEST,
    BundleManifest,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from purrsight.inference.errors import BundleError
from purrsight.report import ANSWER_FIELDS


def _encoder(kind: str, identity: str) -> dict:
    return {
        "config": {"type": "hf", "path": f"/m/{kind}", "pooling": "mean", "max_length": 128},
        "identity": identity,
    }


# What `purrsight export` wrote before the manifest was typed (an int8 bundle), verbatim.
OLDER = {
    "format": "purrsight-bundle-v1",
    "labels": ["content", "playful", "curious", "demanding", "fearful", "aggressive", "in_pain"],
    "unsure_label": "unsure",
    "welfare_labels": ["in_pain"],
    "modalities": ["image", "audio"],
    "num_soft_tokens": 2,
    "projectors": {"file": "projectors.safetensors", "in_dim": 16, "llm_dim": 32, "hidden_dim": 16},
    "llm": {
        "name": "/m/tiny-llama",
        "identity": "llm:772a603d91df91d4",
        "model_type": "llama",
        "hidden_size": 32,
        "kind": "int8",
    },
    "lora": {
        "r": 4,
        "alpha": 8,
        "dropout": 0.1,
        "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"],
        "merged": True,
    },
    "quantization": {
        "method": "torch dynamic int8 (nn.Linear)",
        "skipped": ["down_proj"],
        "llm_fp32_mb": 0.12,
        "llm_int8_mb": 0.09,
        "bundle_mb": 0.14,
    },
    "sizes": {"llm_fp32_mb": 0.12, "llm_int8_mb": 0.09, "bundle_mb": 0.14},
    "aligner": {"file": "aligner.pt", "sha256": "69052a7b", "embed_dim": 16, "run_name": "run-a"},
    "encoders": {
        "image": _encoder("vit", "hf-image:vit:mean:30055350c688ce86"),
        "audio": _encoder("wav2vec2", "hf-audio:wav2vec2:mean:3e6465e28c4b6648"),
        "text": _encoder("bert", "hf-text:bert:mean:b5c9285885c1cf6b:max128"),
    },
    "prompt": {
        "system_prompt": "",
        "instruction": "How does this cat feel?",
        "answer_fields": ["emotion", "arousal", "evidence", "summary", "advice"],
    },
    "inference": {
        "instruction": "How does this cat feel?",
        "unsure_threshold": 0.4,
        "welfare_threshold": 0.3,
        "video_frames": 8,
        "max_text_chars": 500,
    },
    "media": {
        "max_image_pixels": 40000000,
        "max_audio_seconds": 30.0,
        "max_file_bytes": 104857600,
        "max_video_seconds": 60.0,
    },
    "generation": {"max_new_tokens": 6},
    "max_text_length": 600,
    "source": {
        "checkpoint": "/runs/last.ckpt",
        "checkpoint_sha256": "5569fde9",
        "global_step": 2,
        "exported": "2026-12-06T06:26:21+00:00",
    },
}


def test_an_older_manifest_loads_and_writes_back_byte_for_byte(tmp_path) -> None:
    text = json.dumps(OLDER, indent=2) + "\n"  # how the untyped export wrote it
    (tmp_path / MANIFEST).write_text(text)
    manifest = read_manifest(tmp_path)
    assert manifest.llm.kind == "int8" and manifest.quantization.skipped == ["down_proj"]
    assert manifest.encoders["audio"].config.path == "/m/wav2vec2"
    assert manifest.to_json() == text
    out = tmp_path / "again"
    write_manifest(out, manifest)
    assert (out / MANIFEST).read_text() == text


def test_missing_settings_get_the_defaults_the_predictor_used() -> None:
    older = copy.deepcopy(OLDER)
    for key in ("inference", "media", "prompt", "welfare_labels", "unsure_label", "sizes"):
        del older[key]
    older["quantization"].pop("skipped")
    older["encoders"]["image"].pop("identity")
    older["aligner"].pop("run_name")
    manifest = parse_manifest(older)
    assert manifest.inference == InferenceConfig()
    assert manifest.inference.instruction == "How does this cat feel?"
    assert (manifest.inference.unsure_threshold, manifest.inference.welfare_threshold) == (0.4, 0.3)
    assert (manifest.inference.video_frames, manifest.inference.max_text_chars) == (8, 500)
    assert manifest.media == MediaConfig()
    assert manifest.prompt.system_prompt == "" and manifest.prompt.answer_fields == list(
        ANSWER_FIELDS
    )
    assert manifest.welfare_labels == ["in_pain"] and manifest.unsure_label == "unsure"
    assert manifest.quantization.skipped == [] and manifest.encoders["image"].identity is None
    assert manifest.aligner.run_name is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["inference"].update(unsure_treshold=0.5),
            "unknown key 'inference.unsure_treshold'; allowed here: instruction, unsure_threshold",
        ),
        (lambda m: m.update(colour="red"), "unknown key 'colour'; allowed here: format, labels"),
        (
            lambda m: m["encoders"]["text"]["config"].update(pooling_mode="cls"),
            "unknown key 'encoders.text.config.pooling_mode'; allowed here: type, path",
        ),
        (lambda m: m["llm"].pop("kind"), "llm.kind: Field required"),
        (lambda m: m["llm"].update(kind="gguf"), "llm.kind: Input should be 'adapter'"),
        (lambda m: m["inference"].update(unsure_threshold=1.5), "inference.unsure_threshold: "),
        (lambda m: m.update(modalities=["image", "smell"]), "modalities: must be distinct"),
        (lambda m: m["encoders"].pop("audio"), "encoders: no entry for the bundle's modalities"),
        (lambda m: m.update(quantization=None), "quantization: an int8 bundle must describe"),
        (lambda m: m.update(format="purrsight-bundle-v0"), "this version reads"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_key(tmp_path, change, message) -> None:
    bad = copy.deepcopy(OLDER)
    change(bad)
    (tmp_path / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(BundleError, match=re.escape(f"{tmp_path / MANIFEST}: ")) as caught:
        read_manifest(tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_no_manifest_or_no_json_is_a_bundle_error(tmp_path) -> None:
    with pytest.raises(BundleError, match="not a Purr-Sight bundle"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(BundleError, match="top level must be a JSON object"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)


ADDED_SINCE = {"reading", "ready"}
"""Keys newer exports write (absent from OLDER, which older bundles hold)."""


def test_the_model_lists_keys_in_the_order_export_writes_them() -> None:
    fields = [f for f in BundleManifest.model_fields if f not in ADDED_SINCE]
    assert fields == list(OLDER)
