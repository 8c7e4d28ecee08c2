"""Length-grouped sampling: batches of samples of similar length, so padding to the longest
in the batch wastes little, in an order that depends only on ``(seed, epoch)``.

The epoch's shuffle is cut into groups of ``group_batches`` spans; each group is sorted by
length and cut into spans of ``batch_size × num_replicas`` samples; the spans are then
shuffled. Under DDP rank ``r`` takes ``span[r::num_replicas]``, so every rank's batch
comes from the same sorted span (similar lengths on all ranks, none waiting for a long
one) and every rank gets the same number of samples (the shuffle is padded by repeating
its start, as ``DistributedSampler`` does). Torch only, no other dependency.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

DEFAULT_GROUP_BATCHES = 16


def length_grouped_order(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int = 0,
    num_replicas: int = 1,
    group_batches: int = DEFAULT_GROUP_BATCHES,
) -> list[list[int]]:
    """The epoch's spans: lists of ``batch_size * num_replicas`` indices, each sorted
    longest first; only the last may be shorter (a multiple of ``num_replicas``)."""
    if batch_size < 1 or num_replicas < 1 or group_batches < 1:
        raise ValueError(
            f"batch_size, num_replicas and group_batches must be >= 1, got {batch_size}, "
            f"{num_replicas}, {group_batches}"
        )
    n = len(lengths)
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    total = -(-n // num_replicas) * num_replicas
    order += order[: total - n] if n else []
    span = batch_size * num_replicas
    spans: list[list[int]] = []
    for start in range(0, total, span * group_batches):
        group = sorted(order[start : start + span * group_batches], key=lambda i: -lengths[i])
        spans += [group[j : j + span] for j in range(0, len(group), span)]
    # Only full spans are shuffled: the short one stays last, so every DataLoader batch
    # (batch_size consecutive indices of one rank) lies within one span.
    full = len(spans) - (1 if spans and len(spans[-1]) < span else 0)
    shuffled = torch.randperm(full, generator=generator).tolist()
    return [spans[i] for i in shuffled] + spans[full:]


class LengthGroupedSampler(Sampler[int]):
    """Sample indices in length-grouped order; ``batch_size`` consecutive indices of one
    process form one batch of similar lengths. Lightning-compatible :meth:`set_epoch`.

    Args:
        lengths: token length of every sample.
        batch_size: per-process batch size (the DataLoader's).
        seed: with the epoch, the only source of randomness.
        num_replicas: DDP world size (1 alone).
        rank: ``None`` yields every rank's indices, interleaved so that a
            ``DistributedSampler(shuffle=False)`` around it (what Lightning wraps a custom
            sampler in under DDP) hands rank ``r`` exactly ``span[r::num_replicas]``;
            an int yields only that rank's share (for use without such a wrapper).
        group_batches: spans sorted together; larger groups pad less, shuffle less.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int | None = None,
        group_batches: int = DEFAULT_GROUP_BATCHES,
    ) -> None:
        if rank is not None and not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.group_batches = group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        per_rank = -(-len(self.lengths) // self.num_replicas)
        return per_rank if self.rank is not None else per_rank * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        spans = length_grouped_order(
            self.lengths,
            self.batch_size,
            self.seed,
            self.epoch,
            self.num_replicas,
            self.group_batches,
        )
        for span in spans:
            yield from span if self.rank is None else span[self.rank :: self.num_replicas]
