"""Packed batches: several samples share one row, so short samples stop paying for the
longest one's padding (``packing: true``).

A batch's samples are placed whole into rows of at most ``capacity`` tokens, first fit
in order of decreasing length (a sample is never split). Each sample restarts its
``position_ids`` at 0; Hugging Face decoders read a restart as a sequence boundary and
attend only within each sample (a block-diagonal causal mask under SDPA and eager
attention; ``flash_attention_2`` runs variable-length kernels on the same positions).
The batch keeps its samples, so the loss — the mean over the batch's labelled tokens —
and its gradient are those of the padded batch: packing changes the layout, not the
training. The one token whose target would cross a boundary (a sample's last token
predicting the next sample's first) is the next sample's first label, which is set to
``IGNORE_INDEX``; a padded batch never learns that position either.

Shapes: n = samples, r = rows, s = row length, k = slots per modality, e = feature size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from purrsight.data.instruction import IGNORE_INDEX, Batch, assemble_batch, padded_length


def first_fit_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of total length <= ``capacity``: first fit, longest
    first (ties by index, so the result is a function of ``lengths`` alone). Each row
    lists its samples in placing order.

    Raises:
        ValueError: a length exceeds ``capacity`` or ``capacity`` < 1.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(
            f"samples {too_long} are longer than the row capacity {capacity} "
            f"(lengths {[lengths[i] for i in too_long]})"
        )
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= lengths[i]
    return rows


def collate_packed(
    batch: Sequence[dict[str, Any]],
    pad_token_id: int = 0,
    capacity: int | None = None,
    pad_to_multiple_of: int = 1,
) -> Batch:
    """Pack items from :func:`~purrsight.data.instruction.make_item` into rows.

    Args:
        batch: the items (n of them).
        pad_token_id: fills the unused tail of each row (attention 0, label ignored).
        capacity: most tokens in a row (None: the batch's longest item, so a row is never
            longer than the padded batch would be).
        pad_to_multiple_of: the row length is the fullest row rounded up to this.
    Returns:
        A :class:`Batch` with ``input_ids``/``labels``/``attention_mask``/``position_ids``
        ``[r, s]``, per-sample ``features`` ``[n, e]``, ``present`` ``[n]``,
        ``placeholder_positions`` ``[n, k]`` (within the sample's row) and
        ``sample_rows`` ``[n]``; samples keep the batch's order.
    """
    if not batch:
        raise ValueError("collate_packed: empty batch")
    lengths = [len(item["input_ids"]) for item in batch]
    rows = first_fit_rows(lengths, capacity or max(lengths))
    s = padded_length(max(sum(lengths[i] for i in row) for row in rows), pad_to_multiple_of)
    r = len(rows)
    input_ids = torch.full((r, s), pad_token_id, dtype=torch.long)
    labels = torch.full((r, s), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((r, s), dtype=torch.long)
    position_ids = torch.zeros((r, s), dtype=torch.long)
    sample_rows = torch.zeros(len(batch), dtype=torch.long)
    offsets = [0] * len(batch)
    for row, members in enumerate(rows):
        at = 0
        for i in members:
            n = lengths[i]
            input_ids[row, at : at + n] = batch[i]["input_ids"]
            labels[row, at : at + n] = batch[i]["labels"]
            labels[row, at] = IGNORE_INDEX  # the previous sample's last token predicts nothing
            attention_mask[row, at : at + n] = 1
            position_ids[row, at : at + n] = torch.arange(n)
            sample_rows[i], offsets[i] = row, at
            at += n
        # The tail restarts too, so it is a block of its own and never a sample's context.
        position_ids[row, at:] = torch.arange(s - at)
    return assemble_batch(
        batch, offsets, input_ids, attention_mask, labels, position_ids, sample_rows
    )
