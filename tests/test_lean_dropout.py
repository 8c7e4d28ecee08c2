"""LeanDropout: nn.Dropout's behaviour with a bool mask saved for backward."""

from __future__ import annotations

import copy

import torch
from torch import nn

from purrsight.models.lean_dropout import LeanDropout, use_lean_lora_dropout
from purrsight.models.mm_llm import build_multimodal_llm
from qwen_fixture import byte_tokenizer, tiny_llama


def test_train_mode_drops_and_scales_and_backward_uses_the_same_mask() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 500, requires_grad=True)
    drop = LeanDropout(0.25).train()
    saved: list[torch.dtype] = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.dtype) or t, lambda t: t
    ):
        y = drop(x)
    assert saved == [torch.bool]  # nothing full-precision kept for backward
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    upstream = torch.randn_like(y)
    y.backward(upstream)
    assert torch.allclose(x.grad, upstream * kept / 0.75)


def test_eval_mode_and_zero_p_are_the_identity() -> None:
    x = torch.randn(4, 6)
    assert LeanDropout(0.5).eval()(x) is x
    assert LeanDropout(0.0).train()(x) is x


def test_multimodal_llm_uses_it_for_every_lora_adapter() -> None:
    tok = byte_tokenizer()
    model = build_multimodal_llm(
        copy.deepcopy(tiny_llama(len(tok))),
        tok,
        in_dim=8,
        num_tokens=2,
        modalities=("image",),
        lora_r=4,
        lora_dropout=0.1,
    )
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    lora = [m for n, m in model.named_modules() if ".lora_dropout." in n]
    assert lora and all(type(m) is LeanDropout and m.p == 0.1 for m in lora)
    assert all(type(m) is not nn.Dropout for m in lora) and len(drops) >= len(lora)
    assert use_lean_lora_dropout(model, lean=False) == len(lora)  # back to PEFT's own
    lora = [m for n, m in model.named_modules() if ".lora_dropout." in n]
    assert all(type(m) is nn.Dropout and m.p == 0.1 for m in lora)
