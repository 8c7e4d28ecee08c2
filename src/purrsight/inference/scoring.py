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


def _with_prefix_ids(item: dict[str, Any], ids: Sequence[int]) -> dict[str, Any]:
    """A generation prompt item with ``ids`` (unlabelled) appended."""
    extra = torch.tensor(list(ids), dtype=torch.long)
    return {
        **item,
        "input_ids": torch.cat([item["input_ids"], extra]),
        "labels": torch.cat([item["labels"], torch.full_like(extra, -100)]),
    }


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


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


class _Tree:
    """A left-padded batch of prompts run once with a KV cache, then blocks of
    continuations run on top of it, each block's rows repeating the rows before it."""

    def __init__(self, model: MultimodalLLM, items: Sequence[dict[str, Any]], pad: int) -> None:
        self.model, self.pad = model, pad
        self.device = next(model.parameters()).device
        batch = collate(items, pad, padding_side="left").to(self.device)
        embeds = model.embed(
            batch.input_ids, batch.features, batch.present, batch.placeholder_positions
        )
        self.mask = batch.attention_mask  # [rows, columns so far]
        positions = position_ids_from_mask(self.mask)
        out = model.llm(
            inputs_embeds=embeds,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        self.last = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        """[rows, v]: each row's next-token distribution."""
        self.next_position = positions[:, -1] + 1  # [rows]
        self.cache_kwargs = model._cache_kwargs(out)

    def extend(self, blocks: Sequence[Sequence[int]], repeat: int) -> torch.Tensor:
        """Repeat every row ``repeat`` times and run ``blocks`` (one per new row, right-
        padded) on top; the rows then end at each block's last real token.

        Returns:
            [rows * repeat] each block's summed token log-probability.
        """
        next(iter(self.cache_kwargs.values())).batch_repeat_interleave(repeat)
        ids, block_mask = _pad(blocks, self.pad, self.device)
        start = self.next_position.repeat_interleave(repeat)[:, None]
        # Padding columns of earlier blocks sit before this one: masked, never attended.
        self.mask = torch.cat([self.mask.repeat_interleave(repeat, dim=0), block_mask], dim=1)
        out = self.model.llm(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=start + torch.arange(ids.shape[1], device=self.device),
            use_cache=True,
            **self.cache_kwargs,
        )
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # [rows, c, v]
        scores = _token_logprobs(self.last.repeat_interleave(repeat, dim=0), logp, ids, block_mask)
        lengths = block_mask.sum(dim=1)  # [rows]
        self.last = logp[torch.arange(len(lengths), device=self.device), lengths - 1]
        self.next_position = start[:, 0] + lengths
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
    extended, continuations = [], []
    for item, prefix in zip(items, prefixes, strict=True):
        shared, rest = split_candidates(tokenizer, prefix, options)
        extended.append(_with_prefix_ids(item, shared))
        continuations.extend(rest)
    was_training = model.training
    model.eval()
    try:
        scores = _Tree(model, extended, _pad_id(tokenizer)).extend(continuations, len(options))
    finally:
        model.train(was_training)
    return scores.view(len(items), len(options)).cpu()


def _common_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs``."""
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


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
    extended = [_with_prefix_ids(item, full[0][0][:shared]) for item in items]
    was_training = model.training
    model.eval()
    try:
        tree = _Tree(model, extended, _pad_id(tokenizer))
        score1 = tree.extend(level1 * b, n1)  # [b*n1]
        score2 = tree.extend(level2 * b, n2)  # [b*n1*n2]
    finally:
        model.train(was_training)
    joint = score1.repeat_interleave(n2) + score2
    return joint.view(b, n1, n2).cpu()
