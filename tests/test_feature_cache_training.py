"""The feature cache in the jobs: ``purrsight cache-features`` fills it, Phase 1 and Phase 2
train from it (same numbers as without it), and with a full cache no encoder is loaded.

Tiny random encoders, a random aligner, a tiny Llama with a byte tokenizer (as in
test_phase2_train.py, whose data helpers this reuses).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import purrsight.models.encoders as encoders_module
from purrsight.cli import main
from purrsight.config import load_config
from purrsight.data.demo import generate_demo_dataset
from purrsight.train.phase1 import run_phase1
from purrsight.train.phase2 import run_phase2
from purrsight.train.phase2_setup import aligned_splits, plan_run
from test_phase2_train import MODALITIES, _make_aligner, _make_data, _make_llm_folder


def _refuse_encoders(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an encoder was loaded although every feature is cached")

    monkeypatch.setattr(encoders_module, "build_encoder", refuse)


@pytest.fixture(scope="module")
def phase2_setup(tmp_path_factory, tiny_encoder_dirs):
    """(root, overrides) for a 2-step Phase 2 run with the feature cache on."""
    root = tmp_path_factory.mktemp("cache_phase2")
    data = _make_data(root)
    encoders = [f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES]
    _make_aligner(root, load_config(None, encoders))
    overrides = [
        *encoders,
        f"llm_model_name={_make_llm_folder(root, 'llama')}",
        f"phase1_checkpoint_path={root}/alignment/*/aligner.pt",
        f"data_dir={data}",
        f"phase1.data_dir={data}",
        "batch_size=3",
        "num_epochs=1",
        "max_steps=2",
        "warmup_steps=1",
        "lora_r=4",
        "lora_alpha=8",
        "num_soft_tokens=2",
        "projector_hidden_dim=16",
        "max_text_length=400",  # the byte tokenizer spends a token per character
        "num_workers=0",
        "preview_samples=0",
        "mlflow.enabled=false",
        "feature_cache=true",
        f"feature_cache_dir={root / 'cache'}",
        f"output_dir={root / 'out'}",
    ]
    return root, overrides


def _cache_features(config_file: Path, capsys) -> dict:
    assert main(["cache-features", "--config", str(config_file)]) == 0
    return json.loads(capsys.readouterr().out)


def test_cache_features_then_phase2_trains_without_encoders(
    phase2_setup, capsys, monkeypatch
) -> None:
    root, overrides = phase2_setup
    config = load_config(None, overrides)
    config_file = root / "cache.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump()), encoding="utf-8")

    cold = _cache_features(config_file, capsys)
    assert cold["aligner"].endswith("aligner.pt")
    assert cold["phase2_samples"]["train"] == 9 and cold["phase2_samples"]["val"] == 3
    assert cold["encoder"]["computed"] > 0 and cold["aligned"]["computed"] > 0
    assert sorted(cold["encoders_loaded"]) == sorted(MODALITIES)
    assert cold["entries"] > 0 and cold["size_mb"] > 0

    warm = _cache_features(config_file, capsys)
    assert warm["encoder"]["computed"] == 0 and warm["aligned"]["computed"] == 0
    # (the splits share media files: the cold run already hit on the repeats)
    assert warm["aligned"]["hits"] == cold["aligned"]["hits"] + cold["aligned"]["computed"]
    assert warm["encoders_loaded"] == []

    # Cached aligned features are the ones the plain path computes.
    plan = plan_run(config, None, None)
    plain = aligned_splits(config.model_copy(update={"feature_cache": False}), plan)
    _refuse_encoders(monkeypatch)
    cached = aligned_splits(config, plan)
    for split in (1, 3):
        for m in plain[4]:
            present = plain[split].present[m]
            assert torch.equal(cached[split].present[m], present)
            torch.testing.assert_close(
                cached[split].features[m][present],
                plain[split].features[m][present],
                atol=1e-6,
                rtol=0,
            )

    result = run_phase2(config)  # build_encoder is still refused
    assert len(result.history) == 2
    assert result.last_checkpoint is not None and result.last_checkpoint.is_file()


def test_phase2_fills_a_cold_cache_itself(phase2_setup, tmp_path) -> None:
    _, overrides = phase2_setup
    config = load_config(
        None, [*overrides, f"feature_cache_dir={tmp_path / 'c'}", f"output_dir={tmp_path / 'o'}"]
    )
    run_phase2(config)
    assert any((tmp_path / "c" / "aligned").rglob("*.safetensors"))


def test_phase1_from_the_cache_trains_the_same_aligner_without_encoders(
    tmp_path, tiny_encoder_dirs, monkeypatch
) -> None:
    generate_demo_dataset(tmp_path / "data", n=28, seed=3, image_size=32, audio_seconds=0.5)
    overrides = [
        *[f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES],
        f"phase1.data_dir={tmp_path / 'data'}",
        "phase1.epochs=2",
        "phase1.batch_size=8",
        "phase1.embed_dim=16",
        "phase1.head_hidden_dim=32",
        "mlflow.enabled=false",
        f"feature_cache_dir={tmp_path / 'cache'}",
    ]

    def run(name: str, cache: bool):
        config = load_config(
            None,
            [
                *overrides,
                f"feature_cache={str(cache).lower()}",
                f"phase1.output_dir={tmp_path / name}",
                "phase1.run_name=r",
            ],
        )
        result = run_phase1(config)
        return torch.load(result.aligner_path, weights_only=True), result

    plain, _ = run("plain", cache=False)
    cold, _ = run("cold", cache=True)
    _refuse_encoders(monkeypatch)
    warm, result = run("warm", cache=True)
    for state in (cold, warm):
        assert state.keys() == plain.keys()
        for key in plain:
            torch.testing.assert_close(state[key], plain[key], atol=1e-6, rtol=0)
    meta = json.loads((result.aligner_path.parent / "aligner.json").read_text())
    assert set(meta["encoders"]) == set(MODALITIES)


def test_cache_features_without_an_aligner_fills_the_encoder_level(
    phase2_setup, tmp_path, capsys
) -> None:
    _, overrides = phase2_setup
    config = load_config(
        None,
        [
            *overrides,
            f"phase1_checkpoint_path={tmp_path}/none/*/aligner.pt",
            f"feature_cache_dir={tmp_path / 'c'}",
            "feature_cache=false",
        ],
    )
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump()), encoding="utf-8")
    report = _cache_features(config_file, capsys)
    assert report["aligner"] is None and "skipped" in report["note_aligned"]
    assert report["encoder"]["computed"] > 0 and report["aligned"]["computed"] == 0
    assert "training will not read the cache" in report["note"]
