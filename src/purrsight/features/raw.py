"""Raw encoder features: one pass of samples through the frozen encoders, no cache.

Encoders are frozen, so their features are computed once per run (not once per
epoch) and training works on the resulting table. :class:`~purrsight.features.FeatureSource`
calls this for every feature it computes (the cache stores its results).
Shapes: n = samples, d_m = a modality's feature size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from purrsight.config import MediaConfig
from purrsight.data.manifest import Sample
from purrsight.data.media import MediaError, decode_media
from purrsight.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class FeatureTable:
    """Encoder features of n samples, zero rows where a modality is absent."""

    ids: list[str]
    features: dict[str, torch.Tensor]
    """{modality: [n, d_m] float32}."""
    present: dict[str, torch.Tensor]
    """{modality: [n] bool}."""

    def __len__(self) -> int:
        return len(self.ids)


def _loader(modality: str, encoder: Any, media: MediaConfig) -> Callable[[Sample], Any]:
    """How one sample's input for ``modality`` is read."""
    if modality == "text":
        return lambda s: s.text
    rate = encoder.sample_rate if modality == "audio" else None
    return lambda s: decode_media(modality, getattr(s, modality), media, rate)


def _has(sample: Sample, modality: str) -> bool:
    return modality == "text" or getattr(sample, modality) is not None


def encode_samples(
    samples: Sequence[Sample],
    encoders: dict[str, Any],
    media: MediaConfig,
    batch_size: int = 16,
    desc: str = "encode",
) -> FeatureTable:
    """Decode every sample's media and run it through each frozen encoder.

    Raises:
        MediaError: naming the sample's ``file:line`` and the media file's problem.
    """
    features: dict[str, torch.Tensor] = {}
    present: dict[str, torch.Tensor] = {}
    for modality, encoder in encoders.items():
        load = _loader(modality, encoder, media)
        mask = torch.tensor([_has(s, modality) for s in samples], dtype=torch.bool)
        rows = [i for i, flag in enumerate(mask.tolist()) if flag]
        out = torch.zeros(len(samples), encoder.dim, dtype=torch.float32)
        # Log lines, not a progress bar: a bar shows nothing when stderr is not a terminal.
        progress = Progress(f"{modality} encoder ({desc})", len(rows), log, unit="sample")
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            items = [_load_one(load, samples[i]) for i in chunk]
            with torch.no_grad():
                out[chunk] = encoder(items).float()
            progress.update(start + len(chunk))
        features[modality], present[modality] = out, mask
    return FeatureTable(ids=[s.id for s in samples], features=features, present=present)


def _load_one(load: Callable[[Sample], Any], sample: Sample) -> Any:
    try:
        return load(sample)
    except MediaError as err:
        raise MediaError(
            err.path, f"{err.reason} (sample {sample.id!r} at {sample.source})"
        ) from None
