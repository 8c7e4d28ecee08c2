"""Dropout that keeps a 1-byte mask for backward instead of a full-precision one.

PEFT puts an ``nn.Dropout`` on the input of every LoRA adapter (q, k, v, o: four per
layer). On CPU ``nn.Dropout`` multiplies by a float noise tensor that autograd keeps
until backward: four fp32 copies of the layer input, about a quarter of everything a
SmolLM2 training step saves. :class:`LeanDropout` draws the same distribution (keep with
probability ``1 - p``, scale by ``1 / (1 - p)``) but saves a ``bool`` mask. On other
devices it is ``nn.Dropout`` itself (CUDA's fused kernel already saves a bool mask).

The mask comes from 16 random bits per element (four per 64-bit draw of the CPU
generator): drawing one float per element was a fifth of a SmolLM2 CPU training step.
The keep probability is then ``1 - p`` rounded to a multiple of 2**-16 (0.899994 for
p = 0.1), and the scale is the exact inverse of that, so the output stays unbiased.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref

import torch
from torch import nn


class _KeepAndScale(torch.autograd.Function):
    """``x * keep * scale`` with ``keep`` (bool) the only tensor saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


_LEVELS = 1 << 16


def bernoulli_mask(shape: torch.Size, keep: float) -> tuple[torch.Tensor, float]:
    """A ``bool`` tensor of ``shape``, each element True with probability ``keep``
    rounded to a multiple of 2**-16; returns it with that exact probability.

    Draws ``ceil(numel / 4)`` full-range int64 values from the default CPU generator
    (so ``torch.manual_seed`` and checkpoint recomputation replay it) and reads them as
    int16: three times faster than ``torch.rand`` per element.
    """
    numel = math.prod(shape)
    kept_levels = min(_LEVELS, max(0, round(keep * _LEVELS)))
    if kept_levels in (0, _LEVELS):  # 32768 does not fit the int16 comparison below
        return torch.full(shape, kept_levels == _LEVELS, dtype=torch.bool), kept_levels / _LEVELS
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    # int16 values are uniform on [-32768, 32767]; v >= t holds for 32768 - t of them.
    threshold = (_LEVELS >> 1) - kept_levels
    mask = bits.view(torch.int16)[:numel].view(shape) >= threshold
    return mask, kept_levels / _LEVELS


class _LastDraw(threading.local):
    """The last input a :class:`LeanDropout` dropped out (held weakly), its result, and
    which modules have used that result (per thread)."""

    x_ref: weakref.ref | None = None
    version: int = -1
    p: float = -1.0
    out: torch.Tensor | None = None
    users: frozenset[int] = frozenset()


def _forget(last: _LastDraw, ref: weakref.ref) -> None:
    """The input died: drop its result. Holding it longer would keep the autograd graph
    behind it alive (measured: +37 MB of activations per training step)."""
    if last.x_ref is ref:
        last.x_ref = last.out = None


_LAST = _LastDraw()


class LeanDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same train/eval behaviour) with a bool mask, whose
    result is shared by sibling adapters that read the same input.

    PEFT gives q_proj, k_proj and v_proj one dropout each, and all three read the same
    normed hidden state: three masks, three products and three backward products per
    layer, a third of a SmolLM2 CPU step. Here the first of them draws the mask and the
    others (distinct modules, same tensor object, unmodified, same ``p``) reuse its
    result, so a layer's q/k/v adapters see one dropout mask (as a fused-QKV LoRA
    would) and autograd sums their gradients through one mask. A module that sees the
    same tensor twice draws afresh, as ``nn.Dropout`` does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if torch.compiler.is_compiling():
            return super().forward(x)  # the compiler fuses its own mask; no Python cache
        last = _LAST
        if (
            last.x_ref is not None
            and last.x_ref() is x
            and last.version == x._version
            and last.p == self.p
            and id(self) not in last.users
        ):
            last.users = last.users | {id(self)}
            return last.out
        out = self._draw(x)
        last.x_ref = weakref.ref(x, functools.partial(_forget, last))
        last.version, last.p, last.out = x._version, self.p, out
        last.users = frozenset({id(self)})
        return out

    def _draw(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)  # CUDA's fused dropout already keeps a bool mask
        if self.p >= 1.0:
            return x * 0.0
        keep, keep_probability = bernoulli_mask(x.shape, 1.0 - self.p)
        return _KeepAndScale.apply(x, keep, 1.0 / keep_probability)


def use_lean_lora_dropout(model: nn.Module, lean: bool = True) -> int:
    """Swap every LoRA adapter's ``nn.Dropout`` in ``model`` for :class:`LeanDropout` (in
    place; ``lean=False`` swaps back); returns how many were swapped. No parameters or
    buffers change."""
    old, new = (nn.Dropout, LeanDropout) if lean else (LeanDropout, nn.Dropout)
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is old:
                dropouts[name] = new(dropout.p)
                swapped += 1
    return swapped
