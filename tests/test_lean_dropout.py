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


def test_bernoulli_mask_keeps_the_rounded_probability_and_replays_under_a_seed() -> None:
    from purrsight.models.lean_dropout import bernoulli_mask

    torch.manual_seed(3)
    mask, keep = bernoulli_mask(torch.Size([1001, 997]), 0.9)  # numel not a multiple of 4
    assert mask.dtype == torch.bool and mask.shape == (1001, 997)
    assert keep == round(0.9 * 65536) / 65536
    # ~1e6 draws: the observed rate sits within 5 standard errors of the exact probability
    assert abs(mask.float().mean().item() - keep) < 5 * (keep * (1 - keep) / mask.numel()) ** 0.5
    # every one of the four int16 lanes of a 64-bit draw is used, none stuck
    lanes = mask.flatten()[: 4 * (mask.numel() // 4)].view(-1, 4).float().mean(0)
    assert torch.all((lanes - keep).abs() < 0.005), lanes
    torch.manual_seed(3)
    again, _ = bernoulli_mask(torch.Size([1001, 997]), 0.9)
    assert torch.equal(mask, again)
    assert bernoulli_mask(torch.Size([7]), 1.0)[0].all()
    assert not bernoulli_mask(torch.Size([7]), 0.0)[0].any()


def test_adapters_reading_one_input_share_one_mask_and_gradients_add_up() -> None:
    """q/k/v adapters read the same hidden state: one draw, reused by the siblings."""
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    q, k, o = LeanDropout(0.5).train(), LeanDropout(0.5).train(), LeanDropout(0.5).train()
    yq, yk = q(x), k(x)
    assert yq is yk  # the sibling reused the draw
    again = q(x)  # the same module on the same tensor draws afresh, like nn.Dropout
    assert again is not yq and not torch.equal(again != 0, yq != 0)
    yo = o(x.detach().clone().requires_grad_())  # another tensor: its own mask
    assert not torch.equal(yo != 0, yq != 0)
    (2 * yq + 3 * yk).sum().backward()
    assert torch.allclose(x.grad, 5 * (yq != 0) / 0.5)


def test_an_in_place_change_or_other_p_draws_a_new_mask() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 32)
    a, b, c = LeanDropout(0.5).train(), LeanDropout(0.5).train(), LeanDropout(0.25).train()
    first = a(x)
    assert c(x) is not first  # a different p is not the same distribution
    first = a(x)
    x.add_(1.0)
    assert b(x) is not first  # the input changed since the draw


def test_the_shared_result_is_dropped_when_its_input_dies() -> None:
    """The cache must not outlive its input: holding the result keeps the autograd graph
    behind it (a step's activations) alive into the next step."""
    from purrsight.models import lean_dropout

    x = torch.randn(16, 8, requires_grad=True)
    y = LeanDropout(0.5).train()(x * 2.0)  # the input is a temporary
    assert lean_dropout._LAST.out is None and lean_dropout._LAST.x_ref is None
    y.sum().backward()
    assert x.grad is not None
