"""Phase 2 data: instruction samples → aligned features (once) → tokenised items → batches.

Encoders and aligner are frozen in Phase 2, so each sample's aligned features are a pure
function of its media: a :class:`~purrsight.features.FeatureSource` computes them once per
run and the encoders are freed before training. Only ``image`` and ``audio`` feed Phase 2:
a sample's text side in Phase 1 is the response's summary, so feeding it here would hand
the model its answer; ``video`` is not supported yet.

Data order is a function of ``(seed, epoch)`` only and the train loader records how many
batches of the current epoch it has handed out, so ``--resume`` continues mid-epoch with
exactly the batches an uninterrupted run would have seen. Under DDP Lightning replaces
the sampler with a ``DistributedSampler`` (seeded the same way); nothing here changes that.

Shapes: n = samples, e = aligned feature size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from purrsight.data.instruction import collate, encode_sample
from purrsight.data.length_groups import LengthGroupedSampler
from purrsight.data.manifest import ManifestError, Sample
from purrsight.data.packing import collate_packed
from purrsight.features.aligned import AlignedFeatures
from purrsight.report import ANSWER_FIELDS
from purrsight.vocabulary import MEDIA_MODALITIES

log = logging.getLogger(__name__)

PHASE2_MODALITIES = MEDIA_MODALITIES  # image, audio: the soft-prompt slots


# ----------------------------------------------------------------------------- modalities


def sample_modalities(sample: Sample) -> list[str]:
    """The Phase 2 modalities ``sample`` has; a sample with none of them is refused."""
    found = [m for m in PHASE2_MODALITIES if getattr(sample, m) is not None]
    if not found:
        raise ManifestError(
            f"{sample.source}: Phase 2 needs an image or audio; video is not supported yet"
        )
    return found


def used_modalities(splits: Sequence[Sequence[Sample]]) -> list[str]:
    """Phase 2 modalities present in any sample (checking every sample has one); warns
    once when video files are ignored."""
    seen: set[str] = set()
    ignored_video = 0
    for samples in splits:
        for sample in samples:
            seen.update(sample_modalities(sample))
            ignored_video += sample.video is not None
    if ignored_video:
        log.warning(
            "%d samples have a video; Phase 2 ignores video (not supported yet)", ignored_video
        )
    return [m for m in PHASE2_MODALITIES if m in seen]


# ----------------------------------------------------------------------------- dataset


class InstructionDataset(Dataset):
    """Tokenised training items (chat prompt with soft-token slots + response), built once.

    Tokenising up front surfaces every too-long prompt before training starts and keeps
    workers cheap (they only collate)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        aligned: AlignedFeatures,
        tokenizer: Any,
        num_tokens: int,
        max_length: int,
        answer_fields: Sequence[str] = ANSWER_FIELDS,
    ) -> None:
        if [s.id for s in samples] != aligned.ids:
            raise ValueError("samples and aligned features are not in the same order")
        self.items: list[dict[str, Any]] = []
        self.truncated = 0
        """Samples whose response was cut to fit ``max_length``."""
        for i, sample in enumerate(samples):
            item = encode_sample(
                sample,
                tokenizer,
                aligned.row(i),
                num_tokens,
                max_length,
                answer_fields=answer_fields,
            )
            self.truncated += item["truncated"]
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


# ----------------------------------------------------------------------------- loaders


class EpochShuffleSampler(RandomSampler):
    """A shuffle that depends only on ``(seed, epoch)``: epoch e's order is the same in an
    uninterrupted run and in one resumed from a checkpoint. Lightning calls
    :meth:`set_epoch` at every epoch start (a ``RandomSampler`` subclass, so under DDP it
    is swapped for a ``DistributedSampler``, which is seeded the same way)."""

    def __init__(self, data_source: Dataset, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader that knows how many batches of the current epoch it has handed out.

    Lightning saves :meth:`state_dict` in every checkpoint and, when resuming, calls
    :meth:`load_state_dict` before the epoch starts; the next iteration then skips the
    batches the interrupted run already trained on (if it is the same epoch). ``__iter__``
    is a generator, so nothing is read until the first batch is requested — after
    Lightning has set the sampler's epoch."""

    # Class-level defaults: Lightning may re-create the loader (DDP) with DataLoader's
    # own __init__ arguments, so this class adds none.
    _resume: tuple[int, int] | None = None
    _consumed: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def rewind_to(self, batches: int) -> None:
        """Count only ``batches`` as done (a batch that failed mid-step is redone)."""
        self._consumed = min(self._consumed, batches)

    def __iter__(self):
        epoch = int(getattr(self.sampler, "epoch", 0))
        skip = 0
        if self._resume is not None:
            saved_epoch, batches = self._resume
            self._resume = None
            skip = batches if saved_epoch == epoch else 0
        self._consumed = skip
        iterator = super().__iter__()
        for _ in range(skip):  # cheap: items are pre-tokenised, features precomputed
            next(iterator, None)
        for batch in iterator:
            self._consumed += 1
            yield batch


def build_loader(
    dataset: InstructionDataset,
    batch_size: int,
    pad_token_id: int,
    num_workers: int,
    seed: int,
    train: bool,
    group_by_length: bool = False,
    num_replicas: int = 1,
    pad_to_multiple_of: int = 1,
    packing: bool = False,
) -> DataLoader:
    """The train loader (seeded epoch shuffle, resumable) or an ordered eval loader.

    Both get their own ``torch.Generator``: DataLoader otherwise draws each iterator's
    worker seed from the global RNG, which would shift the dropout masks of a resumed
    run against an uninterrupted one. ``group_by_length``: the train shuffle puts
    samples of similar length together (:class:`LengthGroupedSampler`), laid out for
    ``num_replicas`` DDP processes; Lightning's sampler wrapper then gives rank ``r``
    every ``num_replicas``-th index, which is exactly its share of each group.
    ``pad_to_multiple_of``: see :func:`collate`. ``packing``: each batch's samples share
    rows no longer than its longest sample (:func:`collate_packed`); the batches, and so
    the loss, are the same."""
    combine = collate_packed if packing else collate
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "collate_fn": partial(
            combine, pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of
        ),
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
        "generator": torch.Generator().manual_seed(seed),
    }
    if train and group_by_length:
        lengths = [len(item["input_ids"]) for item in dataset.items]
        sampler = LengthGroupedSampler(lengths, batch_size, seed, num_replicas)
        return ResumableDataLoader(dataset, sampler=sampler, **common)
    if train:
        return ResumableDataLoader(dataset, sampler=EpochShuffleSampler(dataset, seed), **common)
    return DataLoader(dataset, shuffle=False, **common)
