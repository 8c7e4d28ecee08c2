"""Packed batches (``packing: true``): row layout, and the same loss and gradients as the
padded batch on tiny Qwen2 and Llama models, under SDPA and eager attention."""

from __future__ import annotations

import copy

import pytest
import torch

from purrsight.data.instruction import IGNORE_INDEX, collate, encode_example, make_item
from purrsight.data.packing import collate_packed, first_fit_rows
from purrsight.models.mm_llm import build_multimodal_llm
from qwen_fixture import byte_tokenizer, qwen_tokenizer, tiny_llama, tiny_qwen

E, K = 8, 3
LONG = '{"emotion": "fearful", "confidence": 0.8, "summary": "' + "Scared, hiding. " * 12 + '"}'
SPECS = [  # (modalities, response): one long sample and three short ones
    (["image", "audio"], LONG),
    (["audio"], '{"emotion": "content"}'),
    (["image"], '{"emotion": "playful"}'),
    (["image", "audio"], '{"emotion": "curious", "confidence": 0.5}'),
]


def _items(tok) -> list[dict]:
    gen = torch.Generator().manual_seed(3)
    items = []
    for i, (modalities, response) in enumerate(SPECS):
        ex = encode_example(tok, modalities, "How does this cat feel?", response, K, 512)
        feats = {m: torch.randn(E, generator=gen) for m in modalities}
        items.append(make_item(ex, feats, f"s{i}"))
    return items


# ----------------------------------------------------------------------------- layout


def test_first_fit_rows_places_every_sample_once_within_capacity() -> None:
    lengths = [50, 10, 30, 20, 40, 10, 35]
    rows = first_fit_rows(lengths, 60)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 60 for row in rows)
    # Longest first, each into the first row with room: 30 finds none (free 10, 20, 25).
    assert rows == [[0, 1], [4, 3], [6, 5], [2]]
    assert first_fit_rows([5, 5], 5) == [[0], [1]]
    with pytest.raises(ValueError, match=r"samples \[1\] are longer than the row capacity 5"):
        first_fit_rows([5, 6], 5)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        first_fit_rows([1], 0)


def test_packed_rows_hold_each_sample_whole_with_restarting_positions() -> None:
    tok = qwen_tokenizer()
    items = _items(tok)
    # A labelled first token: a padded batch never learns it (nothing precedes it), so a
    # packed one must not learn it from the previous sample's last token either.
    items[2]["labels"][0] = items[2]["input_ids"][0]
    packed = collate_packed(items, pad_token_id=tok.pad_token_id, pad_to_multiple_of=8)
    lengths = [len(item["input_ids"]) for item in items]
    assert len(packed.input_ids) < len(items), "the short samples should share a row"
    assert packed.input_ids.shape[1] == -(-max(lengths) // 8) * 8  # never past the longest
    assert packed.num_samples == len(items) and packed.ids == ["s0", "s1", "s2", "s3"]
    assert int(packed.attention_mask.sum()) == sum(lengths)  # no token lost, none added
    for i, item in enumerate(items):
        row = int(packed.sample_rows[i])
        starts = (packed.position_ids[row] == 0).nonzero().flatten().tolist()
        found = [
            s
            for s in starts
            if packed.input_ids[row, s : s + lengths[i]].tolist() == item["input_ids"].tolist()
        ]
        assert found, f"sample {i} is not whole in row {row}"
        start = found[0]
        assert packed.position_ids[row, start : start + lengths[i]].tolist() == list(
            range(lengths[i])
        )
        # Labels as the item's, except the first (it would be the previous sample's target).
        assert packed.labels[row, start] == IGNORE_INDEX
        assert torch.equal(packed.labels[row, start + 1 : start + lengths[i]], item["labels"][1:])
        for m, first in item["placeholders"].items():
            slots = packed.placeholder_positions[m][i]
            assert slots.tolist() == list(range(start + first, start + first + K))
            assert torch.equal(packed.features[m][i], item["features"][m])
            assert bool(packed.present[m][i])
    assert set(packed.model_inputs()) >= {"position_ids", "sample_rows"}
    assert "position_ids" not in collate(items, tok.pad_token_id).model_inputs()


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("family", ["qwen", "llama"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_and_gradients_equal_the_padded_batch(family: str, attention: str) -> None:
    tok = qwen_tokenizer() if family == "qwen" else byte_tokenizer()
    base = (tiny_qwen if family == "qwen" else tiny_llama)(len(tok))
    base.config._attn_implementation = attention
    items = _items(tok)
    padded = collate(items, pad_token_id=tok.pad_token_id)
    packed = collate_packed(items, pad_token_id=tok.pad_token_id)
    assert len(packed.input_ids) < len(padded.input_ids)
    losses, grads = [], []
    for batch in (padded, packed):
        torch.manual_seed(0)
        model = build_multimodal_llm(
            copy.deepcopy(base), tok, in_dim=E, num_tokens=K, lora_r=4, lora_alpha=8,
            lora_dropout=0.0, modalities=("image", "audio"),
        ).train()  # fmt: skip
        with torch.no_grad():  # non-zero B, so LoRA's A gets a gradient too
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1)
        loss = model(**batch.model_inputs()).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert torch.allclose(losses[0], losses[1], atol=1e-5), losses
    for name, grad in grads[0].items():
        assert grad is not None and grad.abs().sum() > 0, name
        assert torch.allclose(grad, grads[1][name], atol=1e-5), name
