"""Batched report generation: aligned features → prompts → greedy decoding → parsed reports.

Prompts differ in length (which modalities are present, the instruction), so they are
sorted by length before batching: a batch then holds prompts of nearly equal length and
left padding wastes little compute. Results come back in the caller's order.

With an :class:`~purrsight.inference.grammar.AnswerGrammar`, decoding is constrained to the
report schema of each request (:mod:`purrsight.inference.grammar`): every answer is
complete, valid JSON the schema accepts, with absent inputs' cues null.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from purrsight.data.instruction import (
    SYSTEM_PROMPT,
    collate,
    encode_prompt,
    make_item,
    order_modalities,
    pad_id,
)
from purrsight.inference.grammar import AnswerGrammar, GrammarConstraint
from purrsight.inference.report_parse import ParseResult, parse_report
from purrsight.inference.scoring import with_prefix_ids
from purrsight.models.mm_llm import MultimodalLLM
from purrsight.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """How long generation took and how much it produced."""

    samples: int = 0
    batches: int = 0
    seconds: float = 0.0
    generated_tokens: int = 0
    """Real tokens generated: each row up to and including its stop token (the stop
    token a finished row repeats while others go on is not counted)."""
    truncated: list[bool] = field(default_factory=list)
    """Per sample (caller's order): hit ``max_new_tokens`` without a stop token."""

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


def _instructions(instruction: str | Sequence[str], n: int) -> list[str]:
    """One instruction per sample: a single string is shared by all."""
    if isinstance(instruction, str):
        return [instruction] * n
    instructions = list(instruction)
    if len(instructions) != n:
        raise ValueError(f"{len(instructions)} instructions for {n} samples")
    return instructions


def _stop_ids(model: MultimodalLLM, tokenizer: Any) -> set[int]:
    """The model's stop tokens plus this tokenizer's end token (the model may have been
    built without a tokenizer)."""
    stop = set(model.stop_token_ids())
    if tokenizer.eos_token_id is not None:
        stop.add(int(tokenizer.eos_token_id))
    return stop


def build_items(
    tokenizer: Any,
    samples_features: Sequence[dict[str, torch.Tensor]],
    instruction: str | Sequence[str],
    num_tokens: int,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """One :func:`collate` item per sample: its generation prompt with a slot group per
    modality in its features ({modality: [e]}, present modalities only)."""
    instructions = _instructions(instruction, len(samples_features))
    items = []
    for i, (features, text) in enumerate(zip(samples_features, instructions, strict=True)):
        modalities = order_modalities(list(features))
        encoded = encode_prompt(tokenizer, modalities, text, num_tokens, system_prompt)
        items.append(make_item(encoded, {m: features[m] for m in modalities}, str(i)))
    return items


def with_answer_prefix(item: dict[str, Any], tokenizer: Any, prefix: str) -> dict[str, Any]:
    """A generation prompt item with the answer's first tokens (``prefix``) appended,
    unlabelled: the model continues from them as if it had written them itself."""
    if not prefix:
        return item
    return with_prefix_ids(item, tokenizer(prefix, add_special_tokens=False)["input_ids"])


def _decode_rows(ids: torch.Tensor, tokenizer: Any, stop: set[int]) -> list[tuple[str, int, bool]]:
    """[b, n] generated ids → (text before the stop token, real tokens, truncated)."""
    rows = []
    for row in ids.tolist():
        end = next((i for i, t in enumerate(row) if t in stop), None)
        text_end = len(row) if end is None else end
        text = tokenizer.decode(row[:text_end], skip_special_tokens=True)
        rows.append((text, len(row) if end is None else end + 1, end is None))
    return rows


def generate_texts(
    model: MultimodalLLM,
    tokenizer: Any,
    samples_features: Sequence[dict[str, torch.Tensor]],
    instruction: str | Sequence[str],
    num_tokens: int,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    system_prompt: str = SYSTEM_PROMPT,
    progress: str | None = None,
    prefixes: Sequence[str] | None = None,
    grammar: AnswerGrammar | None = None,
) -> tuple[list[str], GenerationStats]:
    """Greedy generated text per sample (caller's order) and the timing.

    Args:
        model: the Phase 2 model (put in eval mode for the call by ``generate_ids``).
        tokenizer: the LLM's tokenizer (chat template, decode).
        samples_features: per sample, {modality: [e] aligned feature} for the modalities
            it has (at least one).
        instruction: one instruction for all samples, or one per sample.
        num_tokens: soft tokens per modality (the projectors' ``k``).
        max_new_tokens: generation stops there (the text is then likely truncated); with
            a ``grammar``, raised where needed to the longest answer it allows, so no
            answer is cut off.
        batch_size: prompts decoded together.
        progress: when given, the name of the progress lines logged as batches finish
            (:class:`~purrsight.progress.Progress`); None for a quiet call (a server's).
        prefixes: per sample, the start of the answer, given rather than generated (e.g.
            the label scoring chose); each returned text begins with it. None: no prefix.
        grammar: when given, each answer (prefix included) is constrained to
            ``grammar.schema`` of its sample's modalities: complete and valid by
            construction. None: unconstrained.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = build_items(tokenizer, samples_features, instruction, num_tokens, system_prompt)
    answer_starts = [""] * len(items) if prefixes is None else list(prefixes)
    if len(answer_starts) != len(items):
        raise ValueError(f"{len(answer_starts)} prefixes for {len(items)} samples")
    items = [
        with_answer_prefix(item, tokenizer, a) for item, a in zip(items, answer_starts, strict=True)
    ]
    modalities = [order_modalities(list(f)) for f in samples_features]
    # Stable sort: equal-length prompts keep their order, so results are reproducible.
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    stop = _stop_ids(model, tokenizer)
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(items)
    stats = GenerationStats(samples=len(items), truncated=[False] * len(items))
    start = time.perf_counter()
    shown = Progress(progress, len(items), log, unit="report") if progress else None
    for first in range(0, len(order), batch_size):
        chosen = order[first : first + batch_size]
        batch = collate([items[i] for i in chosen], pad_id(tokenizer), padding_side="left")
        inputs = batch.to(device).model_inputs()
        limit, constraint = max_new_tokens, None
        if grammar is not None:
            rows = [(modalities[i], answer_starts[i]) for i in chosen]
            limit, constraint = _constrained(grammar, tokenizer, rows, stop, max_new_tokens)
        ids = model.generate_ids(
            max_new_tokens=limit, stop_ids=stop, constraint=constraint, **inputs
        )
        for i, (text, count, truncated) in zip(
            chosen, _decode_rows(ids, tokenizer, stop), strict=True
        ):
            texts[i] = answer_starts[i] + text
            stats.generated_tokens += count
            stats.truncated[i] = truncated
        stats.batches += 1
        if shown is not None:
            shown.update(first + len(chosen), **{"tokens/s": _rate(stats, start)})
    stats.seconds = time.perf_counter() - start
    return texts, stats


def _constrained(
    grammar: AnswerGrammar,
    tokenizer: Any,
    rows: Sequence[tuple[Sequence[str], str]],
    stop: set[int],
    max_new_tokens: int,
) -> tuple[int, GrammarConstraint]:
    """A batch's grammar constraint (rows: each one's modalities and answer start) and its
    token limit: at least the longest rest of an answer the grammar allows (a token holds
    at least a byte) plus the stop token."""
    schemas = [grammar.schema(m) for m, _ in rows]
    prefix_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] if a else [] for _, a in rows]
    longest = max(grammar.max_bytes(m) - len(a.encode()) + 1 for m, a in rows)
    return max(max_new_tokens, longest), GrammarConstraint(tokenizer, schemas, prefix_ids, stop)


def _rate(stats: GenerationStats, start: float) -> float:
    """Tokens generated per second since ``start``."""
    return stats.generated_tokens / max(time.perf_counter() - start, 1e-9)


def generate_reports(
    model: MultimodalLLM,
    tokenizer: Any,
    samples_features: Sequence[dict[str, torch.Tensor]],
    instruction: str | Sequence[str],
    labels: Sequence[str],
    num_tokens: int,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    system_prompt: str = SYSTEM_PROMPT,
    progress: str | None = "generate",
) -> list[ParseResult]:
    """A parsed report per sample, in the caller's order (see :func:`generate_texts`;
    progress lines named ``progress`` go to the log unless it is None).

    Each result's report (when one parses) lists exactly the modalities the sample had.
    Texts cut off by ``max_new_tokens`` go through the parser's truncation repair like
    any other; whatever the schema rejects comes back ``"invalid"`` with the reason.
    """
    texts, stats = generate_texts(
        model,
        tokenizer,
        samples_features,
        instruction,
        num_tokens,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system_prompt=system_prompt,
        progress=progress,
    )
    log.info(
        "generated %d reports in %.1f s (%d batches, %d tokens, %.1f tokens/s, %d hit "
        "max_new_tokens=%d)",
        stats.samples,
        stats.seconds,
        stats.batches,
        stats.generated_tokens,
        stats.tokens_per_second,
        sum(stats.truncated),
        max_new_tokens,
    )
    return [
        parse_report(text, labels, modalities=order_modalities(list(features)))
        for text, features in zip(texts, samples_features, strict=True)
    ]
