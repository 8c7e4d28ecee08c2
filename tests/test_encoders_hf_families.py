"""The `hf` encoder type with the model families users bring: a full CLIP folder (the
vision tower is used) and an Audio Spectrogram Transformer."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from purrsight.config import AudioEncoderConfig, ImageEncoderConfig
from purrsight.models.encoders import build_encoder


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_ast_dir(tmp_path_factory) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    folder = tmp_path_factory.mktemp("ast")
    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_length=64,
        num_mel_bins=32,
        frequency_stride=16,
        time_stride=16,
        patch_size=16,
    )
    ASTModel(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64, sampling_rate=16000).save_pretrained(folder)
    return folder


def test_full_clip_folder_uses_the_vision_tower(tiny_clip_dir: Path) -> None:
    encoder = build_encoder("image", ImageEncoderConfig(type="hf", path=str(tiny_clip_dir)))
    images = [Image.new("RGB", (40, 50), (i * 40, 90, 200)) for i in range(3)]
    out = encoder(images)
    assert out.shape == (3, encoder.dim) and torch.isfinite(out).all()
    assert encoder.identity.startswith("hf-image:clip")
    assert not any(p.requires_grad for p in encoder.parameters())


def test_audio_spectrogram_transformer(tiny_ast_dir: Path) -> None:
    encoder = build_encoder("audio", AudioEncoderConfig(type="hf", path=str(tiny_ast_dir)))
    assert encoder.sample_rate == 16000
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(8000).astype(np.float32) * 0.1 for _ in range(2)]
    out = encoder(clips)
    assert out.shape == (2, encoder.dim) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])
