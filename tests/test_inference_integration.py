"""Predict with the embedded default's real models: EfficientNet-Lite0, aiSFX and
SmolLM2-135M-Instruct, on the real cat photo (``skimage.data.chelsea()``) and a generated
sound. The projectors and aligner are untrained (random, seeded): this checks the whole
path and the report's schema, not the answer."""

from __future__ import annotations

import hashlib
import json
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from purrsight.cli import main
from purrsight.config import load_config
from purrsight.inference.export import export_bundle
from purrsight.inference.predictor import Predictor
from purrsight.models.aligner import Aligner, save_aligner
from purrsight.models.encoders import build_encoder
from purrsight.models.llm import load_llm, resolve_llm_folder
from purrsight.models.mm_llm import build_multimodal_llm
from purrsight.models.weights import CHECKPOINT_FORMAT
from purrsight.report import Report

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory):
    """A bundle of the embedded default with random (seeded) aligner and projectors,
    exported from a checkpoint in the Phase 2 format."""
    root = tmp_path_factory.mktemp("real")
    config = load_config(
        "config/demo.yaml",
        [
            "num_soft_tokens=2",
            "lora_r=4",
            "lora_alpha=8",
            "projector_hidden_dim=64",
            "max_new_tokens=24",
            # No reading heads here: the LLM itself writes the report's reading.
            "answer_fields=[emotion, arousal, evidence]",
        ],
    )
    encoders = {
        m: build_encoder(m, getattr(config.encoders, m)) for m in ("image", "audio", "text")
    }
    torch.manual_seed(0)
    aligner = Aligner({m: e.dim for m, e in encoders.items()}, embed_dim=64, hidden_dim=128)
    identities = {m: e.identity for m, e in encoders.items()}
    aligner_path = save_aligner(root / "aligner", aligner, {"encoders": identities})
    llm, tokenizer = load_llm(config.llm_model_name)
    model = build_multimodal_llm(
        llm,
        tokenizer,
        in_dim=64,
        num_tokens=2,
        modalities=("image", "audio"),
        projector_hidden_dim=64,
        lora_r=4,
        lora_alpha=8,
    )
    checkpoint = root / "last.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.trainable_state_dict().items()},
            "global_step": 0,
            "hyper_parameters": {
                "format": CHECKPOINT_FORMAT,
                "config": config.model_dump(),
                "aligner": {
                    "path": str(aligner_path),
                    "sha256": hashlib.sha256(aligner_path.read_bytes()).hexdigest(),
                    "encoders": identities,
                    "embed_dim": 64,
                    "run_name": "random",
                },
                "llm": {
                    "name": config.llm_model_name,
                    "folder": str(resolve_llm_folder(config.llm_model_name)),
                },
                "modalities": ["image", "audio"],
            },
        },
        checkpoint,
    )
    export_bundle(checkpoint, root / "bundle")
    return root / "bundle"


@pytest.fixture(scope="module")
def cat_files(tmp_path_factory):
    from skimage.data import chelsea

    root = tmp_path_factory.mktemp("cat")
    photo = root / "chelsea.png"
    Image.fromarray(chelsea()).save(photo)
    sound = root / "meow.wav"
    rate = 16000
    t = np.arange(2 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * (500 + 300 * np.sin(np.pi * t / 2)) * t)
    with wave.open(str(sound), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((tone * 32767).astype(np.int16).tobytes())
    return photo, sound


def test_cli_predicts_a_valid_report_for_the_cat_photo_and_a_sound(real_bundle, cat_files, capsys):
    photo, sound = cat_files
    code = main(
        [
            "predict",
            "--model",
            str(real_bundle),
            "--image",
            str(photo),
            "--audio",
            str(sound),
            "--details",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    report = Report.model_validate(out["report"])
    assert report.modalities == ["image", "audio"]
    assert out["status"] in ("valid", "repaired", "invalid")
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-4


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_each_modality_alone_gives_a_valid_report(real_bundle, cat_files, modality):
    photo, sound = cat_files
    predictor = Predictor.from_bundle(real_bundle)
    given = {"image": photo} if modality == "image" else {"audio": sound}
    report = predictor.predict(**given, mode="labels").report
    assert Report.model_validate(report.model_dump()).modalities == [modality]
