"""The inference rewrites of the frozen CNN encoders change their speed, not their function."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from purrsight.config import AudioEncoderConfig, ImageEncoderConfig
from purrsight.models.encoders import build_encoder
from purrsight.models.frozen_convs import (
    channels_last,
    fold_batch_norms,
    symmetric_padding_into_convs,
)


def _random_statistics(model: nn.Module, seed: int) -> nn.Module:
    """Running means / variances and affine parameters far from BatchNorm's defaults, so
    that folding them is not a no-op."""
    generator = torch.Generator().manual_seed(seed)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            size = norm.num_features
            norm.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
            norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            norm.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return model.eval()


class _ConvNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class _StaticPadConv(nn.Conv2d):
    """EfficientNet's shape of convolution: a ZeroPad2d module, then an unpadded conv."""

    def __init__(self, pad: tuple[int, int, int, int], stride: int) -> None:
        super().__init__(4, 4, 3, stride=stride)
        self.static_padding = nn.ZeroPad2d(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(
            self.static_padding(x), self.weight, self.bias, self.stride, self.padding
        )


def test_folding_a_batch_norm_keeps_the_function_and_removes_the_norm():
    net = _random_statistics(_ConvNormNet(), seed=1)
    reference = copy.deepcopy(net)
    fold_batch_norms([(net, "conv", "norm")])
    assert isinstance(net.norm, nn.Identity) and net.conv.bias is not None
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net(x), reference(x), atol=1e-5, rtol=1e-5)


def test_only_symmetric_static_padding_moves_into_the_convolution():
    same = _StaticPadConv((1, 1, 1, 1), stride=1)
    uneven = _StaticPadConv((0, 1, 0, 1), stride=2)
    model = nn.Sequential(same, uneven)
    reference = copy.deepcopy(model)
    assert symmetric_padding_into_convs(model) == 1
    assert isinstance(same.static_padding, nn.Identity) and same.padding == (1, 1)
    assert isinstance(uneven.static_padding, nn.ZeroPad2d) and uneven.padding == (0, 0)
    x = torch.randn(2, 4, 12, 12)
    torch.testing.assert_close(model(x), reference(x))


def test_channels_last_weights_compute_the_same():
    net = _random_statistics(_ConvNormNet(), seed=2)
    reference = copy.deepcopy(net)
    channels_last(net)
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net(x), reference(x), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def efficientnet_state(tmp_path_factory) -> tuple[Path, nn.Module]:
    """Random EfficientNet-Lite0 weights with real-looking BatchNorm statistics, and the
    unmodified network holding them."""
    module = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    plain = _random_statistics(module.EfficientNet.from_name("efficientnet-lite0"), seed=3)
    path = tmp_path_factory.mktemp("effnet") / "lite0.pth"
    torch.save(plain.state_dict(), path)
    return path, plain


def test_efficientnet_encoder_equals_the_unmodified_network(efficientnet_state):
    path, plain = efficientnet_state
    encoder = build_encoder("image", ImageEncoderConfig(path=str(path)))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    pixels = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        expected = plain.extract_features(pixels).mean(dim=(2, 3))
        expected_logits = plain(pixels)
    torch.testing.assert_close(encoder.encode(pixels), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(encoder.classify(pixels), expected_logits, atol=1e-4, rtol=1e-4)


def test_aisfx_encoder_equals_the_unmodified_network(tmp_path):
    cnn2d = pytest.importorskip("aisfx.models.cnn2d")
    torch.manual_seed(0)
    plain = _random_statistics(cnn2d.EmbeddingNet("max", 3, 1, 64), seed=4)
    state = {f"embedding_net.{k}": v for k, v in plain.state_dict().items()}
    torch.save((state, {"prosfx": (np.int64(0), 78)}), tmp_path / "checkpoint.pth")
    encoder = build_encoder("audio", AudioEncoderConfig(path=str(tmp_path / "checkpoint.pth")))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    blocks = torch.rand(3, 100, 96)
    with torch.no_grad():
        expected = plain(blocks)
    got = encoder.encode({"blocks": blocks, "blocks_per_clip": torch.ones(3, dtype=torch.long)})
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
