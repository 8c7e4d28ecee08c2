"""Fast tests of the frozen encoders: tiny random models, no packaged weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from purrsight.config import AudioEncoderConfig, EncoderConfig, ImageEncoderConfig
from purrsight.models import audio_features as af
from purrsight.models.encoders import FrozenEncoder, build_encoder
from tiny_models import make_tiny_vit

RNG = np.random.default_rng(0)


def _items(modality: str, sample_rate: int = 16000) -> list:
    """Three inputs of different sizes / lengths for ``modality``."""
    if modality == "image":
        return [
            Image.new("RGB", (40, 50), (200, 10, 10)),
            Image.fromarray(RNG.integers(0, 255, (31, 77, 3), dtype=np.uint8)),
            Image.new("L", (64, 32), 90),  # grayscale: encoders convert to RGB
        ]
    if modality == "audio":
        seconds = (0.25, 0.6, 0.1)
        return [RNG.standard_normal(int(sample_rate * s)).astype(np.float32) for s in seconds]
    return ["a cat purrs", "the stock market fell and rose very loud", "hiss"]


def _hf(modality: str, dirs: dict[str, Path], pooling: str = "mean") -> FrozenEncoder:
    return build_encoder(
        modality, EncoderConfig(type="hf", path=str(dirs[modality]), pooling=pooling)
    )


# ----------------------------------------------------------------------------- HF encoders


@pytest.mark.parametrize(
    ("modality", "pooling"),
    [
        ("image", "mean"),
        ("image", "cls"),
        ("image", "pooler"),
        ("audio", "mean"),
        ("audio", "cls"),
        ("text", "mean"),
        ("text", "cls"),
        ("text", "pooler"),
    ],
)
def test_hf_encoder_outputs_b_by_dim(tiny_encoder_dirs, modality, pooling):
    encoder = _hf(modality, tiny_encoder_dirs, pooling)
    out = encoder(_items(modality, encoder.sample_rate))
    assert encoder.modality == modality
    assert encoder.dim == 32  # the tiny models' hidden size, found by the dummy forward
    assert out.shape == (3, encoder.dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not out.requires_grad


def test_hf_audio_sample_rate_comes_from_the_feature_extractor(tiny_encoder_dirs):
    assert _hf("audio", tiny_encoder_dirs).sample_rate == 16000
    assert _hf("image", tiny_encoder_dirs).sample_rate == 0


def test_image_preprocess_gives_pixel_values(tiny_encoder_dirs):
    batch = _hf("image", tiny_encoder_dirs).preprocess(_items("image"))
    assert batch.shape == (3, 3, 32, 32)


def test_text_mean_pooling_ignores_padding(tiny_encoder_dirs):
    encoder = _hf("text", tiny_encoder_dirs)
    alone = encoder(["a cat"])
    padded = encoder(["a cat", "the stock market fell and rose very loud"])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_audio_mean_pooling_ignores_padding(tiny_encoder_dirs):
    encoder = _hf("audio", tiny_encoder_dirs)
    clip = RNG.standard_normal(4000).astype(np.float32)
    alone = encoder([clip])
    padded = encoder([clip, RNG.standard_normal(9000).astype(np.float32)])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-4, rtol=1e-4)


def test_text_is_truncated_at_max_length(tiny_encoder_dirs):
    cfg = EncoderConfig(type="hf", path=str(tiny_encoder_dirs["text"]), max_length=8)
    batch = build_encoder("text", cfg).preprocess(["a cat " * 50])
    assert batch["input_ids"].shape == (1, 8)


# ----------------------------------------------------------------------------- freezing


def _assert_frozen(encoder: FrozenEncoder) -> None:
    assert all(not p.requires_grad for p in encoder.parameters())
    assert all(not m.training for m in encoder.modules())


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_encoder_is_frozen_and_stays_in_eval(tiny_encoder_dirs, modality):
    encoder = _hf(modality, tiny_encoder_dirs)
    _assert_frozen(encoder)
    encoder.train()
    _assert_frozen(encoder)
    parent = nn.Sequential(encoder, nn.Identity())
    parent.train()  # what a LightningModule does at the start of every epoch
    _assert_frozen(encoder)
    assert parent[1].training  # only the encoder refuses training mode


def _step_downstream_head(encoder: FrozenEncoder, items: list) -> None:
    """One AdamW step on a Linear head trained on the encoder's features, with the
    encoder's parameters deliberately in the optimizer and weight decay on."""

    class Downstream(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(encoder.dim, 4)

    model = Downstream()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    head_before = model.head.weight.detach().clone()
    loss = model.head(model.encoder(items)).square().mean()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in encoder.parameters())
    assert not torch.equal(model.head.weight, head_before)  # the head did train


def _assert_unchanged_after_step(encoder: FrozenEncoder, items: list) -> None:
    # state_dict covers buffers too: BatchNorm running statistics must not move either.
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    first = encoder(items)
    _step_downstream_head(encoder, items)
    after = encoder.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k, v in after.items() if not torch.equal(before[k], v)]
    assert changed == []
    torch.testing.assert_close(encoder(items), first)  # same features after the step


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_frozen_encoder_weights_are_unchanged_after_an_optimizer_step(tiny_encoder_dirs, modality):
    encoder = _hf(modality, tiny_encoder_dirs)
    _assert_unchanged_after_step(encoder, _items(modality, encoder.sample_rate))


# ----------------------------------------------------------------------------- identity


def test_identity_names_weights_and_settings(tiny_encoder_dirs, tmp_path):
    same = _hf("image", tiny_encoder_dirs).identity
    assert same == _hf("image", tiny_encoder_dirs).identity  # stable across builds
    assert same.startswith("hf-image:vit:mean:")
    other_weights = build_encoder(
        "image", EncoderConfig(type="hf", path=str(make_tiny_vit(tmp_path / "vit1", seed=1)))
    )
    assert other_weights.identity != same
    assert _hf("image", tiny_encoder_dirs, pooling="cls").identity != same
    text = _hf("text", tiny_encoder_dirs).identity
    shorter = EncoderConfig(type="hf", path=str(tiny_encoder_dirs["text"]), max_length=16)
    assert build_encoder("text", shorter).identity != text


# ----------------------------------------------------------------------------- errors


def test_unknown_type_names_the_config_key():
    with pytest.raises(ValueError, match=r"^encoders\.image\.type: unknown encoder type 'resnet'"):
        build_encoder("image", EncoderConfig(type="resnet"))
    with pytest.raises(ValueError, match=r"^encoders\.audio\.type: .*'minilm'"):
        build_encoder("audio", EncoderConfig(type="minilm"))
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        build_encoder("video", EncoderConfig(type="hf", path="x"))


def test_missing_folder_names_the_config_key(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"^encoders\.image\.path: folder '.*nope' does not exist"):
        build_encoder("image", EncoderConfig(type="hf", path=str(missing)))
    with pytest.raises(ValueError, match=r"^encoders\.text\.path: .*no config\.json"):
        build_encoder("text", EncoderConfig(type="hf", path=str(tmp_path)))
    with pytest.raises(ValueError, match=r"^encoders\.audio\.path: file '.*nope' does not exist"):
        build_encoder("audio", AudioEncoderConfig(path=str(missing)))
    with pytest.raises(ValueError, match=r"^encoders\.text\.path: folder"):
        build_encoder("text", EncoderConfig(type="minilm", path=str(missing)))


def test_bad_pooling_or_max_length_names_the_config_key(tiny_encoder_dirs):
    with pytest.raises(ValueError, match=r"^encoders\.audio\.pooling: .*no pooler output"):
        _hf("audio", tiny_encoder_dirs, pooling="pooler")
    too_long = EncoderConfig(type="hf", path=str(tiny_encoder_dirs["text"]), max_length=1000)
    with pytest.raises(ValueError, match=r"^encoders\.text\.max_length: 1000 .* 128 positions"):
        build_encoder("text", too_long)


# ----------------------------------------------------------------------------- mel front end


def test_mel_filterbank_rows_sum_to_one_and_peaks_rise():
    fb = af.htk_mel_filterbank()
    assert fb.shape == (96, 1025)
    assert fb.dtype == np.float32
    assert (fb >= 0).all()
    np.testing.assert_allclose(fb.sum(axis=1), 1.0, rtol=1e-5)
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) > 0).all()  # 96 bands over 1025 bins: no two share a peak bin
    assert peaks[-1] < 1024


def test_mel_filterbank_is_triangular_on_the_htk_scale():
    fb = af.htk_mel_filterbank(sr=16000, n_fft=512, n_mels=10, fmin=100.0, fmax=7000.0)
    freqs = np.linspace(0, 8000, 257)
    edges = af.mel_to_hz_htk(np.linspace(af.hz_to_mel_htk(100.0), af.hz_to_mel_htk(7000.0), 12))
    np.testing.assert_allclose(af.hz_to_mel_htk(1000.0), 1000.0, rtol=2e-3)  # HTK: 1 kHz ≈ 1000 mel
    for i, row in enumerate(fb):
        support = freqs[row > 0]
        assert support.min() > edges[i] and support.max() < edges[i + 2]
        rising = np.diff(row[: row.argmax() + 1])
        falling = np.diff(row[row.argmax() :])
        assert (rising >= 0).all() and (falling <= 0).all()  # one peak, linear sides


def _numpy_log_mel(y: np.ndarray) -> np.ndarray:
    """Independent numpy version of the aiSFX front end (librosa 0.9.2 semantics)."""
    y = y / np.abs(y).max()
    padded = np.pad(y, af.N_FFT // 2, mode="constant")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(af.N_FFT) / af.N_FFT)  # periodic Hann
    n_frames = 1 + (len(padded) - af.N_FFT) // af.HOP_LENGTH
    frames = np.stack(
        [padded[i * af.HOP_LENGTH : i * af.HOP_LENGTH + af.N_FFT] for i in range(n_frames)]
    )
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # [time, 1025]
    mel = power @ af.htk_mel_filterbank().astype(np.float64).T
    return np.log10(mel * 10000 + 1) / af.NORM_MAX


def test_log_mel_matches_a_numpy_reference():
    y = (RNG.standard_normal(44100) * 0.1).astype(np.float32)
    spec = af.AisfxFrontEnd().log_mel(y)
    assert spec.shape == (1 + 44100 // 1024, 96)  # (time, mel) as the CNN expects
    np.testing.assert_allclose(spec.numpy(), _numpy_log_mel(y.astype(np.float64)), atol=1e-4)


def test_log_mel_of_silence_is_zero_and_bad_input_is_refused():
    front = af.AisfxFrontEnd()
    assert torch.count_nonzero(front.log_mel(np.zeros(5000, np.float32))) == 0
    with pytest.raises(ValueError, match="mono"):
        front.log_mel(np.zeros((2, 5000), np.float32))
    with pytest.raises(ValueError, match="empty"):
        front.log_mel(np.zeros(0, np.float32))


@pytest.mark.parametrize(
    ("frames", "blocks"), [(1, 1), (30, 1), (99, 1), (100, 1), (149, 1), (150, 2), (260, 4)]
)
def test_frames_to_blocks_counts_like_aisfx(frames, blocks):
    spec = torch.rand(frames, 96) + 0.5
    out = af.frames_to_blocks(spec)
    assert out.shape == (blocks, 100, 96)
    n = min(frames, 100)
    torch.testing.assert_close(out[0, :n], spec[:n])
    assert torch.count_nonzero(out[0, n:]) == 0  # short clips are zero-padded
    if blocks > 1:
        torch.testing.assert_close(out[1], spec[50:150])  # hop of 50 frames


def test_front_end_pads_short_clips_to_one_block():
    batch = af.AisfxFrontEnd()([np.ones(22050, np.float32), RNG.standard_normal(44100 * 4)])
    # 0.5 s → 22 frames → one zero-padded block; 4 s → 173 frames → 2 full blocks.
    assert batch["blocks_per_clip"].tolist() == [1, 2]
    assert batch["blocks"].shape == (3, 100, 96)
    assert torch.count_nonzero(batch["blocks"][0, 22:]) == 0
    assert torch.count_nonzero(batch["blocks"][0, :22]) > 0


# ----------------------------------------------------------------------------- built-ins, random weights


@pytest.fixture(scope="module")
def random_aisfx_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint in aiSFX's own format: ``(state_dict, ds_dict)`` with numpy scalars and
    classifier heads next to the ``embedding_net.`` weights."""
    cnn2d = pytest.importorskip("aisfx.models.cnn2d")
    torch.manual_seed(0)
    net = cnn2d.EmbeddingNet("max", 3, 1, 64)
    state = {f"embedding_net.{k}": v for k, v in net.state_dict().items()}
    state["fc.0.0.weight"] = torch.zeros(256, 512)
    path = tmp_path_factory.mktemp("aisfx") / "checkpoint.pth"
    torch.save((state, {"prosfx": (np.int64(0), 78)}), path)
    return path


@pytest.fixture(scope="module")
def random_efficientnet_weights(tmp_path_factory) -> Path:
    model_mod = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("effnet") / "lite0.pth"
    torch.save(model_mod.EfficientNet.from_name("efficientnet-lite0").state_dict(), path)
    return path


def test_aisfx_encoder_with_random_weights(random_aisfx_checkpoint):
    encoder = build_encoder("audio", AudioEncoderConfig(path=str(random_aisfx_checkpoint)))
    assert (encoder.dim, encoder.sample_rate) == (512, 44100)
    assert encoder.identity.startswith("aisfx:")
    clips = [RNG.standard_normal(n).astype(np.float32) for n in (11025, 44100 * 5)]
    out = encoder(clips)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    # Blocks are embedded independently: a clip's feature does not depend on its batch.
    torch.testing.assert_close(encoder(clips[:1]), out[:1], atol=1e-5, rtol=1e-5)
    _assert_frozen(encoder)
    _assert_unchanged_after_step(encoder, clips[:1])


def test_aisfx_checkpoint_that_does_not_fit_is_refused(tmp_path):
    torch.save({"embedding_net.conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "c")
    pytest.importorskip("aisfx.models.cnn2d")
    with pytest.raises(ValueError, match=r"^encoders\.audio\.path: .*do not fit.*missing"):
        build_encoder("audio", AudioEncoderConfig(path=str(tmp_path / "c")))


def test_efficientnet_encoder_with_random_weights(random_efficientnet_weights):
    encoder = build_encoder("image", ImageEncoderConfig(path=str(random_efficientnet_weights)))
    assert encoder.identity.startswith("efficientnet_lite0:")
    images = _items("image")[:2]
    batch = encoder.preprocess(images)
    assert batch.shape == (2, 3, 224, 224)
    assert batch.min() >= -127 / 128 and batch.max() <= 128 / 128
    assert encoder.encode(batch).shape == (2, 1280)
    assert encoder.classify(batch).shape == (2, 1000)
    _assert_frozen(encoder)
    _assert_unchanged_after_step(encoder, images)
