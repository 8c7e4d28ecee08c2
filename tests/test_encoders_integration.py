"""The built-in encoders with their real packaged weights (see requirements/models.txt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import signal

from purrsight.config import AudioEncoderConfig, ImageEncoderConfig, TextEncoderConfig
from purrsight.models.encoders import build_encoder

pytestmark = pytest.mark.integration

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("text", TextEncoderConfig())


@pytest.fixture(scope="module")
def efficientnet():
    return build_encoder("image", ImageEncoderConfig())


@pytest.fixture(scope="module")
def aisfx():
    return build_encoder("audio", AudioEncoderConfig())


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).item()


def test_minilm_puts_similar_sentences_closer(minilm):
    out = minilm(["a cat purring happily", "a contented cat purrs", "the stock market fell"])
    assert out.shape == (3, 384) and minilm.dim == 384
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))  # L2-normalised
    close, far = _cos(out[0], out[1]), _cos(out[0], out[2])
    assert close > far + 0.3, (close, far)  # seen: 0.67 vs 0.04
    assert minilm.identity.startswith("minilm:")


def test_efficientnet_sees_a_cat_in_chelsea(efficientnet):
    from skimage import data

    batch = efficientnet.preprocess([Image.fromarray(data.chelsea())])
    top5 = efficientnet.classify(batch).topk(5).indices[0].tolist()
    assert set(top5) & set(IMAGENET_CATS), top5
    features = efficientnet.encode(batch)
    assert features.shape == (1, 1280) and torch.isfinite(features).all()
    # The packaged file name carries the first 8 hex digits of its sha256 (torch hub style).
    assert efficientnet.identity.startswith("efficientnet_lite0:57934424")


SR = 44100


def _purr(seconds: float, seed: int) -> np.ndarray:
    """A synthetic purr: a 150 Hz rumble (with 2 harmonics) pulsed 25 times a second."""
    t = np.arange(int(SR * seconds)) / SR
    pulses = np.clip(np.sin(2 * np.pi * 25 * t), 0, None) ** 2
    tone = sum(a * np.sin(2 * np.pi * f * t) for f, a in ((150, 1.0), (300, 0.5), (450, 0.25)))
    y = pulses * tone + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def _hiss(seconds: float, seed: int) -> np.ndarray:
    """A synthetic hiss: white noise high-passed at 3 kHz."""
    noise = np.random.default_rng(seed).standard_normal(int(SR * seconds))
    y = signal.sosfilt(signal.butter(4, 3000, "highpass", fs=SR, output="sos"), noise)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def test_aisfx_tells_a_purr_from_a_hiss(aisfx):
    assert aisfx.sample_rate == SR
    clips = [_purr(3, 0), _hiss(3, 1), _purr(3, 2), _purr(1, 3)]  # 1 s: a padded block
    out = aisfx(clips)
    assert out.shape == (4, 512) and torch.isfinite(out).all()
    purr_hiss = _cos(out[0], out[1])
    purr_purr = _cos(out[0], out[2])
    # Seen on CPU: purr-hiss 0.69, purr-purr (another noise seed) 0.998, 3 s vs 1 s purr 0.91.
    assert purr_hiss < 0.85, purr_hiss
    assert purr_purr > purr_hiss + 0.1, (purr_purr, purr_hiss)
    assert _cos(out[0], out[3]) > purr_hiss
    assert aisfx.identity.startswith("aisfx:")


def test_builtin_encoders_are_frozen(minilm, efficientnet, aisfx):
    for encoder in (minilm, efficientnet, aisfx):
        encoder.train()
        assert all(not m.training for m in encoder.modules())
        assert all(not p.requires_grad for p in encoder.parameters())
