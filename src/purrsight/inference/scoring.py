"""Label scoring: the likelihood the model gives each candidate answer, without generating.

For each sample the prompt (with its soft tokens) and an answer prefix run through the
LLM once, keeping the KV cache; the cache is repeated for the sample's ``n`` candidate
continuations (``"playful\\",\\"confidence\\":"``, …), which then run as one batch. A
candidate's score is the sum of its tokens' log-probabilities: the exact log-likelihood
of that continuation under the model. Softmax over the candidates gives the label
distribution that a report's confidence comes from.

Candidates are tokenized together with the prefix (as training tokenized whole answers),
and the tokens all candidates share are moved into the prefix, so a BPE merge across the
prefix/candidate boundary cannot make one label look cheaper than another.

Shapes: b = samples, n = candidates per sample, s = prompt length, c = longest
continuation, v = vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from purrsight.data.instruction import collate
from purrsight.models.mm_llm import MultimodalLLM, position_ids_from_mask


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
    n = len(options)
    extended, continuations = [], []
    for item, prefix in zip(items, prefixes, strict=True):
        shared, rest = split_candidates(tokenizer, prefix, options)
        extra = torch.tensor(shared, dtype=torch.long)
        extended.append(
            {
                **item,
                "input_ids": torch.cat([item["input_ids"], extra]),
                "labels": torch.cat([item["labels"], torch.full_like(extra, -100)]),
            }
        )
        continuations.extend(rest)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = next(model.parameters()).device
    batch = collate(extended, pad, padding_side="left").to(device)
    was_training = model.training
    model.eval()
    try:
        embeds = model.embed(
            batch.input_ids, batch.features, batch.present, batch.placeholder_positions
        )
        mask = batch.attention_mask
        positions = position_ids_from_mask(mask)
        out = model.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [b, v]
        cache_kwargs = model._cache_kwargs(out)
        next(iter(cache_kwargs.values())).batch_repeat_interleave(n)  # [b*n, …] rows
        width = max(len(c) for c in continuations)
        cand = torch.full((len(continuations), width), pad, dtype=torch.long)
        cand_mask = torch.zeros_like(cand)
        for row, ids in enumerate(continuations):
            cand[row, : len(ids)] = torch.tensor(ids)
            cand_mask[row, : len(ids)] = 1
        cand, cand_mask = cand.to(device), cand_mask.to(device)
        # Right padding inside the continuation block is harmless: padded columns come
        # after every real one, so causal attention never lets a real token see them.
        full_mask = torch.cat([mask.repeat_interleave(n, dim=0), cand_mask], dim=1)
        cand_pos = (
            positions[:, -1:].repeat_interleave(n, dim=0) + 1 + torch.arange(width, device=device)
        )
        out2 = model.llm(
            input_ids=cand,
            attention_mask=full_mask,
            position_ids=cand_pos,
            use_cache=True,
            **cache_kwargs,
        )
        logp = torch.log_softmax(out2.logits.float(), dim=-1)  # [b*n, c, v]
    finally:
        model.train(was_training)
    first_rows = first.repeat_interleave(n, dim=0)  # [b*n, v]
    scores = first_rows.gather(1, cand[:, :1]).squeeze(1)  # the first token of each option
    if width > 1:
        later = logp[:, :-1].gather(2, cand[:, 1:, None]).squeeze(2)  # [b*n, c-1]
        scores = scores + (later * cand_mask[:, 1:]).sum(dim=1)
    return scores.view(len(items), n).cpu()


def _common_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs``."""
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


def _pad(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [r, c] ids and their 0/1 mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _token_logprobs(first: torch.Tensor, logp: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """Sum of log-probs of each row's real tokens: the first from ``first`` [r, v] (the
    position before the block), the rest from ``logp`` [r, c, v] of the block itself."""
    scores = first.gather(1, ids[:, :1]).squeeze(1)
    if ids.shape[1] > 1:
        later = logp[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
        scores = scores + (later * mask[:, 1:]).sum(dim=1)
    return scores


@torch.no_grad()
def score_option_pairs(
    model: MultimodalLLM,
    tokenizer: Any,
    items: Sequence[dict[str, Any]],
    prefix: str,
    firsts: Sequence[str],
    seconds: Sequence[str],
) -> torch.Tensor:
    """[b, n1, n2] joint log-likelihood of ``prefix + firsts[i] + seconds[j]`` after each
    prompt, computed as a tree: the prompt once, each ``firsts`` continuation once, each
    ``seconds`` continuation on top of its ``first``'s cache. Equal to
    :func:`score_options` over all ``n1 * n2`` concatenations (the same tokens are scored),
    at a fraction of the tokens.
    """
    n1, n2 = len(firsts), len(seconds)
    full = [[_ids(tokenizer, prefix + a + b) for b in seconds] for a in firsts]
    shared = _common_length([s for group in full for s in group])
    group_len = [_common_length(group) for group in full]
    level1 = [group[0][shared:g] for group, g in zip(full, group_len, strict=True)]
    level2 = [s[g:] for group, g in zip(full, group_len, strict=True) for s in group]
    if any(not r for r in level1) or any(not r for r in level2):
        # A degenerate tree (an option's tokens merge into the next level): score flat.
        flat = [a + b for a in firsts for b in seconds]
        return score_options(model, tokenizer, items, [prefix] * len(items), flat).view(
            len(items), n1, n2
        )
    b = len(items)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = next(model.parameters()).device
    extra = torch.tensor(full[0][0][:shared], dtype=torch.long)
    extended = [
        {
            **item,
            "input_ids": torch.cat([item["input_ids"], extra]),
            "labels": torch.cat([item["labels"], torch.full_like(extra, -100)]),
        }
        for item in items
    ]
    batch = collate(extended, pad, padding_side="left").to(device)
    was_training = model.training
    model.eval()
    try:
        embeds = model.embed(
            batch.input_ids, batch.features, batch.present, batch.placeholder_positions
        )
        mask = batch.attention_mask
        positions = position_ids_from_mask(mask)
        out = model.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [b, v]
        cache_kwargs = model._cache_kwargs(out)
        cache = next(iter(cache_kwargs.values()))
        # Level 1: [b * n1] rows, each sample's prompt cache repeated.
        cache.batch_repeat_interleave(n1)
        ids1, mask1 = _pad(level1 * b, pad, device)
        lens1 = mask1.sum(dim=1)  # [b*n1]
        mask_p1 = mask.repeat_interleave(n1, dim=0)
        last_pos = positions[:, -1:].repeat_interleave(n1, dim=0)  # [b*n1, 1]
        pos1 = last_pos + 1 + torch.arange(ids1.shape[1], device=device)
        full_mask1 = torch.cat([mask_p1, mask1], dim=1)
        out1 = model.llm(
            input_ids=ids1,
            attention_mask=full_mask1,
            position_ids=pos1,
            use_cache=True,
            **cache_kwargs,
        )
        logp1 = torch.log_softmax(out1.logits.float(), dim=-1)  # [b*n1, c1, v]
        score1 = _token_logprobs(first.repeat_interleave(n1, dim=0), logp1, ids1, mask1)
        # Each row's distribution after its last real level-1 token starts level 2.
        after1 = logp1[torch.arange(len(lens1), device=device), lens1 - 1]  # [b*n1, v]
        # Level 2: [b * n1 * n2] rows on top of each level-1 row.
        cache.batch_repeat_interleave(n2)
        ids2, mask2 = _pad(level2 * b, pad, device)
        pos2 = (last_pos + 1 + lens1[:, None]).repeat_interleave(n2, dim=0) + torch.arange(
            ids2.shape[1], device=device
        )
        # Level-1 padding columns sit between the two blocks: masked out, never attended.
        full_mask2 = torch.cat([full_mask1.repeat_interleave(n2, dim=0), mask2], dim=1)
        out2 = model.llm(
            input_ids=ids2,
            attention_mask=full_mask2,
            position_ids=pos2,
            use_cache=True,
            **cache_kwargs,
        )
        logp2 = torch.log_softmax(out2.logits.float(), dim=-1)
        score2 = _token_logprobs(after1.repeat_interleave(n2, dim=0), logp2, ids2, mask2)
    finally:
        model.train(was_training)
    joint = score1.repeat_interleave(n2) + score2  # [b*n1*n2]
    return joint.view(b, n1, n2).cpu()
