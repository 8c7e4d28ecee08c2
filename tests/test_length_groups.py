"""Length-grouped sampling: a permutation per epoch fixed by (seed, epoch), batches of
similar lengths, and DDP shards that Lightning's sampler wrapper cuts correctly."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from purrsight.data.length_groups import LengthGroupedSampler, length_grouped_order


def _lengths(n: int = 203, seed: int = 0) -> list[int]:
    return torch.randint(20, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _padding(order: list[int], lengths: list[int], batch: int) -> int:
    """Pad tokens when each batch of consecutive indices is padded to its longest."""
    total = 0
    for start in range(0, len(order), batch):
        chunk = [lengths[i] for i in order[start : start + batch]]
        total += max(chunk) * len(chunk) - sum(chunk)
    return total


def test_each_epoch_is_a_seeded_permutation_with_little_padding() -> None:
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths))) and len(sampler) == len(lengths)
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=3)) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == sorted(first) and second != first
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(3)).tolist()
    assert _padding(first, lengths, 8) < 0.25 * _padding(shuffled, lengths, 8)


def test_only_the_last_span_is_short() -> None:
    spans = length_grouped_order(_lengths(203), batch_size=8, seed=0, num_replicas=2)
    sizes = [len(s) for s in spans]
    assert all(size == 16 for size in sizes[:-1]) and sizes[-1] % 2 == 0
    assert sum(sizes) == 204  # padded to a multiple of the world size


def test_ddp_shards_match_lightnings_wrapper_and_batch_together() -> None:
    lengths = _lengths(203, seed=1)
    world, batch = 2, 8
    full = LengthGroupedSampler(lengths, batch, seed=5, num_replicas=world)
    shards = []
    for rank in range(world):
        own = list(LengthGroupedSampler(lengths, batch, seed=5, num_replicas=world, rank=rank))
        wrapped = DistributedSamplerWrapper(full, num_replicas=world, rank=rank, shuffle=False)
        wrapped.set_epoch(0)
        assert list(wrapped) == own
        shards.append(own)
    assert len(shards[0]) == len(shards[1]) == 102
    assert set(shards[0]) | set(shards[1]) == set(range(203))
    # The ranks' batches at one step interleave one span sorted longest first: similar
    # lengths on every rank (none waits long for another).
    for start in range(0, 96, batch):
        a = [lengths[i] for i in shards[0][start : start + batch]]
        b = [lengths[i] for i in shards[1][start : start + batch]]
        assert a == sorted(a, reverse=True) and b == sorted(b, reverse=True)
        assert min(b) <= min(a) <= max(b) <= max(a)
