"""``on_bad_sample: error | skip``: what training does with a sample it cannot use.

A sample is bad when its JSONL line is (malformed JSON, schema, label, a path leaving the
data folder, a repeated id) or when one of the media files it trains on is missing,
too large, too long or does not decode. ``error`` stops at the first one, naming its
``file:line`` and the reason. ``skip`` leaves it out and records it: a console warning,
a line in ``skipped_samples.jsonl`` and (the training jobs add it) an MLflow metric and
artifact. Nothing is dropped silently.

The decision is made once, while the data is prepared and before any sharding, from the
files alone: under DDP every process reads and checks the same files the same way, so
all of them keep the same sample list and get equal batch counts.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from purrsight.config import MediaConfig
from purrsight.data.manifest import ManifestError, Sample, iter_manifest
from purrsight.data.media import MediaError, decode_media
from purrsight.files import atomic_write

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped_samples.jsonl"
Policy = Literal["error", "skip"]
_SOURCE = re.compile(r"^(.*?:\d+): (.*)$", re.DOTALL)


@dataclass(frozen=True)
class Skipped:
    """One left-out sample: where it is, why, and the problem's kind."""

    source: str
    """``<file>:<line>``."""
    reason: str
    kind: str
    split: str


@dataclass
class BadSamples:
    """The policy and every sample it left out (in the order they were met)."""

    policy: Policy
    skipped: list[Skipped] = field(default_factory=list)

    def handle(
        self, err: ManifestError | MediaError, split: str, source: str | None = None, what=""
    ) -> None:
        """Raise ``err`` (``error``) or record it and log one warning (``skip``).

        ``source``: the sample's ``file:line`` (None: the message starts with it);
        ``what``: a prefix for the reason (e.g. the modality)."""
        if self.policy == "error":
            raise err
        message = f"{what}{err}"
        reason = message
        if source is None:
            match = _SOURCE.match(message)
            source, reason = (match.group(1), match.group(2)) if match else ("?", message)
        entry = Skipped(source, reason, getattr(err, "kind", "schema"), split)
        self.skipped.append(entry)
        log.warning("skipped sample at %s (%s): %s", source, split, reason)

    def write(self, path: Path) -> Path:
        """Every skipped sample as one JSON object a line (an empty file: none skipped),
        written atomically."""
        lines = "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in self.ordered())
        return atomic_write(path, lines)

    def ordered(self) -> list[Skipped]:
        """The skipped samples by split (as met), then file, then line number."""
        splits = list(dict.fromkeys(s.split for s in self.skipped))

        def key(entry: Skipped) -> tuple[int, str, int]:
            path, _, line = entry.source.rpartition(":")
            return splits.index(entry.split), path, int(line) if line.isdigit() else 0

        return sorted(self.skipped, key=key)

    def summary(self) -> str:
        return f"{len(self.skipped)} samples skipped (on_bad_sample: {self.policy})"


def read_samples(
    path: str | Path, labels: list[str] | None, bad: BadSamples, split: str
) -> list[Sample]:
    """The usable samples of a JSONL file, in file order; each bad line goes to ``bad``.

    Raises:
        ManifestError: the file is missing, a bad line under ``error``, or no usable
            sample is left.
    """
    samples: list[Sample] = []
    for item in iter_manifest(path, labels):
        if isinstance(item, ManifestError):
            bad.handle(item, split)
        else:
            samples.append(item)
    if not samples:
        left_out = sum(s.split == split for s in bad.skipped)
        raise ManifestError(
            f"{path}: no usable samples in the file ({left_out} skipped as bad)", "file"
        )
    return samples


def screen_media(
    samples: Sequence[Sample],
    modalities: Sequence[str],
    media: MediaConfig,
    bad: BadSamples,
    split: str,
    *,
    need_one: bool = False,
) -> list[Sample]:
    """Under ``skip``: the samples whose ``modalities`` files all decode within the
    ``media`` limits (each file is decoded once here, the way training decodes it);
    the others go to ``bad``. Under ``error`` the samples are returned as they are:
    encoding stops at the first bad file, naming the sample's ``file:line``.

    ``need_one``: a sample with none of ``modalities`` is bad too (Phase 2 needs an
    image or an audio).
    """
    if bad.policy == "error":
        return list(samples)
    kept = []
    for sample in samples:
        if need_one and not any(getattr(sample, m) is not None for m in modalities):
            err = ManifestError(
                f"{sample.source}: Phase 2 needs an image or audio ({'/'.join(modalities)})"
            )
            bad.handle(err, split)
            continue
        problem = _first_media_problem(sample, modalities, media)
        if problem is None:
            kept.append(sample)
        else:
            modality, err = problem
            bad.handle(err, split, sample.source, f"{modality} ")
    return kept


def _first_media_problem(
    sample: Sample, modalities: Sequence[str], media: MediaConfig
) -> tuple[str, MediaError] | None:
    """(modality, error) of the first of ``sample``'s files that does not decode."""
    for modality in modalities:
        path = getattr(sample, modality)
        if path is None:
            continue
        try:
            decode_media(modality, path, media)
        except MediaError as err:
            return modality, err
        except OSError as err:  # a read error the decoder did not phrase itself
            return modality, MediaError(path, err.strerror or str(err), "unreadable_media")
    return None
