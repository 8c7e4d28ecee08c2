"""The memory-lean LM loss gives the plain full-logits loss and the same gradients.

Plain = Hugging Face's own path: full ``[b, s, v]`` logits, shifted labels,
``cross_entropy(ignore_index=-100)`` mean. Tiny random tensors and a 2-layer Llama with
tied embeddings (SmolLM2's layout) built from config."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from purrsight.models.lm_loss import IGNORE_INDEX, lm_loss
from purrsight.models.mm_llm import build_multimodal_llm
from qwen_fixture import byte_tokenizer, tiny_llama

V, D = 97, 16


def _plain(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Linear) -> torch.Tensor:
    logits = head(hidden).float()
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def _case(seed: int, bias: bool):
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(D, V, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, D, generator=gen))
        if bias:
            head.bias.copy_(torch.randn(V, generator=gen))
    hidden = torch.randn(3, 11, D, generator=gen)
    labels = torch.randint(0, V, (3, 11), generator=gen)
    labels[torch.rand(3, 11, generator=gen) < 0.4] = IGNORE_INDEX  # prompt, padding
    labels[2] = IGNORE_INDEX  # a row with nothing to learn
    return head, hidden, labels


@pytest.mark.parametrize("chunk_rows", [1, 4, None])
@pytest.mark.parametrize("bias", [False, True])
def test_same_loss_and_gradients_as_full_logits(chunk_rows, bias) -> None:
    head, hidden, labels = _case(0, bias)
    head.requires_grad_(True)  # check the head's gradient too (frozen in Purr-Sight)
    h1 = hidden.clone().requires_grad_(True)
    plain = _plain(h1, labels, head)
    plain.backward()
    expected = {"hidden": h1.grad, **{n: p.grad.clone() for n, p in head.named_parameters()}}
    head.zero_grad()
    h2 = hidden.clone().requires_grad_(True)
    lean = lm_loss(h2, labels, head, chunk_rows=chunk_rows)
    (lean * 1.0).backward()  # a non-trivial upstream gradient path
    got = {"hidden": h2.grad, **{n: p.grad for n, p in head.named_parameters()}}
    assert torch.allclose(lean, plain, rtol=0, atol=1e-5), (lean, plain)
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, rtol=0, atol=1e-5), name
    # Unlabelled positions get exactly no gradient.
    unused = torch.ones_like(labels, dtype=torch.bool)
    unused[:, :-1] = labels[:, 1:] == IGNORE_INDEX
    assert torch.count_nonzero(h2.grad[unused]) == 0


def test_scaled_upstream_gradient_and_frozen_head() -> None:
    head, hidden, labels = _case(1, False)
    head.requires_grad_(False)
    h1 = hidden.clone().requires_grad_(True)
    (3.0 * _plain(h1, labels, head)).backward()
    h2 = hidden.clone().requires_grad_(True)
    (3.0 * lm_loss(h2, labels, head, chunk_rows=5)).backward()
    assert torch.allclose(h2.grad, h1.grad, rtol=0, atol=1e-5)
    assert head.weight.grad is None


def test_no_labelled_token_gives_zero_and_backward_works() -> None:
    head, hidden, _ = _case(2, False)
    labels = torch.full((3, 11), IGNORE_INDEX)
    h = hidden.clone().requires_grad_(True)
    loss = lm_loss(h, labels, head)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(h.grad) == 0


def test_bf16_autocast_matches_the_plain_autocast_loss() -> None:
    head, hidden, labels = _case(3, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _plain(hidden, labels, head)
        lean = lm_loss(hidden, labels, head)
    assert lean.dtype == torch.float32
    # Same bf16 head matmul on both sides; only the reduction order differs.
    assert torch.allclose(lean, plain, rtol=1e-3, atol=1e-3), (lean, plain)


def test_multimodal_llm_loss_and_grads_equal_the_plain_hf_path() -> None:
    """MultimodalLLM(labels=…) (lean) vs the same model's HF forward with labels (plain)."""
    tok = byte_tokenizer()
    base = tiny_llama(len(tok))
    torch.manual_seed(0)
    model = build_multimodal_llm(
        copy.deepcopy(base),
        tok,
        in_dim=8,
        num_tokens=2,
        modalities=("image",),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
    ).train()
    with torch.no_grad():  # non-zero B, so LoRA A gets a gradient too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, len(tok), (2, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    labels = ids.clone()
    labels[:, :6] = IGNORE_INDEX
    labels[mask == 0] = IGNORE_INDEX
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "features": {"image": torch.randn(2, 8, generator=gen)},
        "present": {"image": torch.tensor([True, True])},
        "placeholder_positions": {"image": torch.tensor([[1, 2], [1, 2]])},
    }
    out = model(**inputs, labels=labels)
    assert out.logits is None
    out.loss.backward()
    lean_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    embeds = model.embed(
        ids, inputs["features"], inputs["present"], inputs["placeholder_positions"]
    )
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    plain = model.llm(
        inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, labels=labels
    ).loss
    plain.backward()
    assert torch.allclose(out.loss, plain, rtol=0, atol=1e-5), (out.loss, plain)
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.allclose(lean_grads[name], param.grad, rtol=0, atol=1e-5), name
    assert any(g.abs().sum() > 0 for n, g in lean_grads.items() if "lora_A" in n)


def test_padding_to_the_longest_gives_the_loss_of_padding_to_max_length() -> None:
    """Right padding is masked and unlabelled: 20 columns or 64 give the same loss."""
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = build_multimodal_llm(
        tiny_llama(len(tok)),
        tok,
        in_dim=8,
        num_tokens=2,
        modalities=("image",),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
    ).eval()
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, len(tok), (2, 20), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0
    labels = torch.where(mask.bool(), ids, IGNORE_INDEX)
    labels[:, :5] = IGNORE_INDEX
    extra = 64 - 20
    padded = {
        "input_ids": nn.functional.pad(ids, (0, extra), value=0),
        "attention_mask": nn.functional.pad(mask, (0, extra), value=0),
        "labels": nn.functional.pad(labels, (0, extra), value=IGNORE_INDEX),
    }
    common = {
        "features": {"image": torch.randn(2, 8, generator=gen)},
        "present": {"image": torch.tensor([True, True])},
        "placeholder_positions": {"image": torch.tensor([[1, 2], [1, 2]])},
    }
    with torch.no_grad():
        short = model(input_ids=ids, attention_mask=mask, labels=labels, **common).loss
        long = model(**padded, **common).loss
    assert torch.allclose(short, long, rtol=0, atol=1e-5), (short, long)


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
def test_frozen_linears_in_bf16_give_the_autocast_result_and_are_restored(
    spill: bool, tmp_path
) -> None:
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = build_multimodal_llm(
        tiny_llama(len(tok)),
        tok,
        in_dim=8,
        num_tokens=2,
        modalities=("image",),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
    ).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(6)
    ids = torch.randint(3, len(tok), (2, 12), generator=gen)
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "features": {"image": torch.randn(2, 8, generator=gen)},
        "present": {"image": torch.tensor([True, True])},
        "placeholder_positions": {"image": torch.tensor([[1, 2], [1, 2]])},
    }

    def loss_and_grads():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
        }

    plain_loss, plain_grads = loss_and_grads()
    spill_dir = tmp_path / "spill" if spill else None
    with model.frozen_linears_as(torch.bfloat16, spill_dir=spill_dir) as converted:
        assert converted > 0
        if spill:  # the fp32 originals wait on disk, not in memory
            assert len(list(spill_dir.glob(".frozen-linears-*.pt"))) == 1
        assert model.llm.get_input_embeddings().weight.dtype == torch.float32  # tied head too
        lean_loss, lean_grads = loss_and_grads()
    assert torch.allclose(lean_loss, plain_loss, rtol=0, atol=1e-6)
    for name, grad in plain_grads.items():
        assert torch.allclose(lean_grads[name], grad, rtol=0, atol=1e-6), name
    for name, param in model.named_parameters():  # every weight back, bit for bit
        assert param.dtype == before[name].dtype and torch.equal(param, before[name]), name
    assert not spill or not any(spill_dir.iterdir())  # the spill file is gone
