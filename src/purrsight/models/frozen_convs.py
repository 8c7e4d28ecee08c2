"""Inference-only rewrites of a frozen CNN that leave its function unchanged (to fp32
rounding) and make it faster on CPU:

* every BatchNorm folded into the convolution before it (``fuse_conv_bn_eval``): one
  pass over the activations instead of two;
* TF-style static "same" padding moved into the convolution where it is symmetric: no
  padded copy of the activations before each convolution (stride-2 layers pad
  asymmetrically and keep their padding module);
* weights in channels-last layout, the layout oneDNN's CPU convolutions are fastest in
  (depthwise ones above all).

Measured on a 2-core AMD EPYC (benchmarks/RESULTS.md, session 8), against the networks as
the encoders ran them before (images already came in channels-last, from the HWC pixels):
EfficientNet-Lite0 1.15-1.26x fp32 and 1.35-1.48x bf16 per 224 px image; aiSFX 25 -> 20
ms fp32 and 13 -> 10 ms bf16 per 2.3 s block. Outputs stay within 3e-5 of the originals.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batch_norms(pairs: Iterable[tuple[nn.Module, str, str]]) -> None:
    """For each ``(owner, conv_name, bn_name)``: ``owner.<conv_name>`` becomes the
    convolution with ``owner.<bn_name>`` folded into its weights and bias, and the
    BatchNorm becomes an ``nn.Identity`` (so the owner's forward is unchanged).

    Both modules must be in eval mode (the running statistics are what is folded)."""
    for owner, conv_name, bn_name in pairs:
        conv, norm = getattr(owner, conv_name), getattr(owner, bn_name)
        setattr(owner, conv_name, fuse_conv_bn_eval(conv, norm))
        setattr(owner, bn_name, nn.Identity())


def symmetric_padding_into_convs(model: nn.Module) -> int:
    """Convolutions that pad with a ``static_padding`` ``nn.ZeroPad2d`` (EfficientNet's
    TF "same" padding) and pad the same on both sides get that padding as their own
    ``padding`` instead. Returns how many were changed."""
    changed = 0
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and module.padding == (0, 0):
                module.padding = (top, left)
                module.static_padding = nn.Identity()
                changed += 1
    return changed


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D weights in channels-last layout (in place)."""
    return model.to(memory_format=torch.channels_last)
