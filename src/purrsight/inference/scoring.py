"""Label scoring: the likelihood the model gives each candidate answer, without generating.

Each sample's prompt (with its soft tokens and an answer prefix) and all its candidate
continuations (``"playful\",\"confidence\":"``, …) run through the LLM in one forward
pass, as one row: the prompt once, then every candidate, under a tree-shaped attention
mask in which each candidate sees the prompt, the candidates it continues, and itself
(tree attention, as speculative decoding verifies drafts). A candidate's score is the
sum of its tokens' log-probabilities: the exact log-likelihood of that continuation
under the model, the same as a separate forward pass per candidate would give
(``tests/test_inference.py``). Softmax over the candidates gives the label distribution
that a report's confidence comes from. No KV cache is copied per candidate, which made
the earlier cache-based design 1.7x slower (``benchmarks/RESULTS.md``).

Candidates are tokenized together with the prefix (as training tokenized whole answers),
and the tokens all candidates share are moved into the prefix, so a BPE merge across the
prefix/candidate boundary cannot make one label look cheaper than another.

Shapes: b = samples, n = candidates per sample, v = vocabulary size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from purrsight.data.instruction import IGNORE_INDEX, collate, pad_id
from purrsight.models.mm_llm import MultimodalLLM
from purrsight.models.modes import eval_mode


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def split_candidates(
    tokenizer: Any, prefix: str, options: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """(shared ids, per-option continuation ids) for ``prefix + option`` texts.

    Every continuation is non-empty: options must be distinct and none may be a prefix of
    another *as tokens* (closing each option with the text that follows it in a report,
    e.g. ``'","confidence":'``, guarantees this)."""
    if len(set(options)) != len(options) or len(options) < 2:
        raise ValueError(f"need at least two distinct options, got {list(options)}")
    full = [_ids(tokenizer, prefix + option) for option in options]
    shared = 0
    while all(len(ids) > shared for ids in full) and len({ids[shared] for ids in full}) == 1:
        shared += 1
    rest = [ids[shared:] for ids in full]
    if any(not r for r in rest):
        raise ValueError(f"an option's tokens are a prefix of another's: {list(options)}")
    return full[0][:shared], rest


def with_prefix_ids(item: dict[str, Any], ids: Sequence[int]) -> dict[str, Any]:
    """A generation prompt item with ``ids`` (unlabelled) appended."""
    extra = torch.tensor(list(ids), dtype=torch.long)
    return {
        **item,
        "input_ids": torch.cat([item["input_ids"], extra]),
        "labels": torch.cat([item["labels"], torch.full_like(extra, IGNORE_INDEX)]),
    }


@dataclass(frozen=True)
class Block:
    """Continuation tokens scored after the prompt and the blocks above them."""

    ids: list[int]
    parent: int = -1
    """Index of the block this one continues (an earlier one); -1: the prompt."""


@dataclass
class _Layout:
    """One row of a tree batch: the prompt, then every block's tokens, flat."""

    ids: list[int]
    positions: list[int]
    """Each token's position: blocks continue from their parent's end, not the row's."""
    sees: torch.Tensor
    """[n, n] bool: which tokens each token attends to (causal within its own branch)."""
    predictor: list[int]
    """Per block token, the token whose output predicts it."""
    block_of: list[int]
    """Per block token, its block's index."""


def _layout(prompt_len: int, blocks: Sequence[Block]) -> _Layout:
    """Tree attention for one prompt and its blocks (tree attention as in speculative
    decoding): each block token sees the prompt, its ancestor blocks and its own block
    up to itself, so every block is scored as if it alone followed its ancestors."""
    starts, ends, first_position = [], [], []  # flat [start, end); position of the first token
    at = prompt_len
    for b, block in enumerate(blocks):
        if not block.ids or not -1 <= block.parent < b:
            raise ValueError(f"block {b}: empty, or its parent {block.parent} is not earlier")
        parent = block.parent
        after_parent = (
            prompt_len if parent < 0 else first_position[parent] + len(blocks[parent].ids)
        )
        starts.append(at)
        ends.append(at + len(block.ids))
        first_position.append(after_parent)
        at += len(block.ids)
    n = at
    sees = torch.zeros(n, n, dtype=torch.bool)
    sees[:prompt_len, :prompt_len] = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
    ids, positions = [], list(range(prompt_len))
    predictor, block_of = [], []
    for b, block in enumerate(blocks):
        lo, hi = starts[b], ends[b]
        rows = slice(lo, hi)
        sees[rows, :prompt_len] = True
        sees[rows, rows] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
        parent = block.parent
        while parent >= 0:
            sees[rows, starts[parent] : ends[parent]] = True
            parent = blocks[parent].parent
        ids += block.ids
        positions += range(first_position[b], first_position[b] + len(block.ids))
        first_predictor = prompt_len - 1 if block.parent < 0 else ends[block.parent] - 1
        predictor += [first_predictor, *range(lo, hi - 1)]
        block_of += [b] * len(block.ids)
    return _Layout(ids, positions, sees, predictor, block_of)


@contextlib.contextmanager
def _attention_that_takes_masks(model: MultimodalLLM):
    """Tree masks need an attention that takes a 4D mask: SDPA or eager (a model loaded
    with another, e.g. flash-attention, is switched to SDPA for the call)."""
    config = model.base_llm().config
    before = config._attn_implementation
    if before not in ("sdpa", "eager"):
        config._attn_implementation = "sdpa"
    try:
        yield
    finally:
        config._attn_implementation = before


def _tree_mask(
    layouts: Sequence[_Layout], offsets: Sequence[int], dtype: torch.dtype, prefix: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """([b, 1, w, prefix + w] additive mask, [b, w] positions) for rows left-padded by
    ``offsets``, after ``prefix`` cached tokens every row shares (seen by every token;
    positions count on from them).

    Additive float (eager attention adds it; SDPA takes it as is), the dtype's minimum
    rather than -inf so that no row's softmax can turn into NaN; padding sees itself."""
    width = offsets[0] + len(layouts[0].positions)  # every row: padding, prompt, blocks
    sees = torch.zeros(len(layouts), width, prefix + width, dtype=torch.bool)
    sees[:, :, :prefix] = True
    positions = torch.zeros(len(layouts), width, dtype=torch.long)
    for r, (lay, off) in enumerate(zip(layouts, offsets, strict=True)):
        sees[r, off:, prefix + off :] = lay.sees
        sees[r, :off, prefix : prefix + off] = torch.eye(off, dtype=torch.bool)
        positions[r, off:] = torch.tensor(lay.positions) + prefix
    mask = torch.zeros(sees.shape, dtype=dtype).masked_fill_(~sees, torch.finfo(dtype).min)
    return mask[:, None], positions


def shared_prefix(items: Sequence[dict[str, Any]]) -> int:
    """How many first tokens every prompt of ``items`` has in common, before any
    soft-token slot (the chat template's opening: the same for every request)."""
    rows = [item["input_ids"].tolist() for item in items]
    limit = min(
        min(item["placeholders"].values(), default=len(row))
        for item, row in zip(items, rows, strict=True)
    )
    limit = min(limit, *(len(row) - 1 for row in rows))
    n = 0
    while n < limit and all(row[n] == rows[0][n] for row in rows):
        n += 1
    return n


def _without_prefix(item: dict[str, Any], n: int) -> dict[str, Any]:
    """``item`` with its first ``n`` tokens cut off (slot positions shifted with them)."""
    return {
        **item,
        "input_ids": item["input_ids"][n:],
        "labels": item["labels"][n:],
        "placeholders": {m: start - n for m, start in item["placeholders"].items()},
    }


@torch.no_grad()
def score_blocks(
    model: MultimodalLLM,
    tokenizer: Any,
    items: Sequence[dict[str, Any]],
    blocks: Sequence[Sequence[Block]],
) -> list[torch.Tensor]:
    """Per item, [len(blocks[i])] each block's summed token log-probability after the
    item's prompt and the block's ancestors, all in one forward pass: every row holds
    its prompt once and every block after it, under a tree-shaped attention mask (no KV
    cache copied per option). Logits are computed only where a block token is predicted.

    Args:
        items: :func:`~purrsight.data.instruction.make_item` prompts.
        blocks: per item, its blocks (parents before children).
    """
    if len(items) != len(blocks):
        raise ValueError(f"{len(items)} prompts but {len(blocks)} block lists")
    # A model that keeps a prefix's keys and values (the ready LLM) computes the prompts'
    # shared opening once per process, not once per row.
    cached = getattr(model.llm, "prefix_cache", None)
    prefix = shared_prefix(items) if cached is not None else 0
    past = None
    if prefix:
        past = cached(items[0]["input_ids"][:prefix].tolist())
        items = [_without_prefix(item, prefix) for item in items]
    layouts = [_layout(len(item["input_ids"]), bl) for item, bl in zip(items, blocks, strict=True)]
    rows = [with_prefix_ids(item, lay.ids) for item, lay in zip(items, layouts, strict=True)]
    device = next(model.parameters()).device
    batch = collate(rows, pad_id(tokenizer), padding_side="left").to(device)
    offsets = [batch.input_ids.shape[1] - len(row["input_ids"]) for row in rows]
    keep = sorted(
        {p + off for lay, off in zip(layouts, offsets, strict=True) for p in lay.predictor}
    )
    with _attention_that_takes_masks(model), eval_mode(model):
        embeds = model.embed(
            batch.input_ids, batch.features, batch.present, batch.placeholder_positions
        )
        mask, positions = _tree_mask(layouts, offsets, embeds.dtype, prefix)
        extra = {}
        if past is not None:
            b = len(rows)
            extra["past_key_values"] = [
                (k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in past
            ]
        out = model.llm(
            inputs_embeds=embeds,
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=torch.tensor(keep, device=device),
            **extra,
        )
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # [b, len(keep), v]
    column = {c: i for i, c in enumerate(keep)}
    scores = []
    for r, (lay, off) in enumerate(zip(layouts, offsets, strict=True)):
        cols = torch.tensor([column[p + off] for p in lay.predictor], device=device)
        targets = torch.tensor(lay.ids, device=device)
        token_logp = logp[r, cols, targets]  # [block tokens]
        per_block = torch.zeros(len(blocks[r]), device=device, dtype=token_logp.dtype)
        scores.append(
            per_block.index_add_(0, torch.tensor(lay.block_of, device=device), token_logp).cpu()
        )
    return scores


@torch.no_grad()
def score_options(
    model: MultimodalLLM,
    tokenizer: Any,
    items: Sequence[dict[str, Any]],
    prefixes: Sequence[str],
    options: Sequence[str],
) -> torch.Tensor:
    """[b, n] log-likelihood of each option after each sample's prompt + answer prefix.

    Args:
        items: :func:`~purrsight.data.instruction.make_item` generation prompts.
        prefixes: per sample, the assistant's text before the options (may be empty).
        options: the candidate continuations, the same for every sample.
    """
    if len(items) != len(prefixes):
        raise ValueError(f"{len(items)} prompts but {len(prefixes)} prefixes")
    extended, blocks = [], []
    for item, prefix in zip(items, prefixes, strict=True):
        shared, rest = split_candidates(tokenizer, prefix, options)
        extended.append(with_prefix_ids(item, shared))
        blocks.append([Block(ids) for ids in rest])
    return torch.stack(score_blocks(model, tokenizer, extended, blocks))
