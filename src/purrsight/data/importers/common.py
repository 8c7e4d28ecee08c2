"""What every importer shares: candidates, skipped files, the label mapping, the report.

An importer only *scans* a source folder: it turns file names into :class:`Candidate`
samples (raw class, subject, metadata) and :class:`Skipped` entries (file + reason).
:mod:`purrsight.data.importers.writer` then maps raw classes to emotions, checks that
each file decodes, links the media under ``<out>/media`` and writes the JSONL and card.
Nothing is dropped silently: every file ends up either in the JSONL or in the skipped list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from purrsight.data.manifest import ManifestError
from purrsight.report import Evidence, Report
from purrsight.vocabulary import DEFAULT_LABELS, label_advice, label_arousal


class DataImportError(ManifestError):
    """A source folder or mapping file that cannot be imported, and why (one line).
    A :class:`ManifestError`, so the CLI prints it as one line with exit code 2."""


@dataclass
class Candidate:
    """One sample found in a source folder, before label mapping and decoding."""

    key: str
    """Unique within the import: the source path without extension, ``/`` kept."""
    source_label: str
    """The class as the data set names it (``B``, ``Angry``, a folder name)."""
    subject_id: str | None
    image: Path | None = None
    audio: Path | None = None
    context: str | None = None
    """Words for the summary: what the cat was doing or the class means."""
    vocalization: str | None = None
    """The vocalisation evidence, when the source says what was heard."""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A source file that did not become a sample."""

    path: str
    """Relative to the source folder."""
    kind: str
    """The reason's category, for counts: one of SKIP_KINDS."""
    reason: str


SKIP_KINDS = (
    "malformed name",
    "not media",
    "outside a label folder",
    "duplicate stem",
    "unknown label",
    "excluded by mapping",
    "undecodable",
)


@dataclass(frozen=True)
class SourceInfo:
    """Where a data set comes from, for the dataset card."""

    name: str
    url: str
    citation: str
    licence: str
    subjects: str
    """How ``subject_id`` is derived, in words."""


@dataclass
class Mapping:
    """Raw class → emotion (``None`` = excluded on purpose), plus import options."""

    labels: dict[str, str | None]
    confidence: float = 1.0
    subject_pattern: str | None = None
    """A regex with a named group ``subject`` applied to file stems (catsound, folders)."""

    def emotion(self, source_label: str) -> str | Skipped:
        """The emotion for a raw class, or why there is none (path left empty)."""
        if source_label not in self.labels:
            return Skipped(
                "", "unknown label", f"unknown label {source_label!r} (not in the mapping)"
            )
        mapped = self.labels[source_label]
        if mapped is None:
            return Skipped(
                "", "excluded by mapping", f"label {source_label!r} excluded by the mapping"
            )
        return mapped


def load_mapping(path: str | Path | None, default: dict[str, str | None]) -> Mapping:
    """The mapping file (YAML or JSON), or ``default``.

    File format::

        labels: {B: content, F: demanding, I: fearful}   # raw class -> emotion, or null
        confidence: 1.0                                   # optional, 0..1
        subject_pattern: '^(?P<subject>[^_]+)_'           # optional

    A file's ``labels`` replace the default table entirely (classes left out are then
    reported as unknown), so what is imported is exactly what the file says.
    """
    if path is None:
        return Mapping(dict(default))
    path = Path(path)
    if not path.is_file():
        raise DataImportError(f"--mapping {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError as err:
        raise DataImportError(f"--mapping {path}: not valid YAML/JSON ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
        raise DataImportError(f"--mapping {path}: needs a 'labels:' table (raw class: emotion)")
    unknown = sorted(set(raw) - {"labels", "confidence", "subject_pattern"})
    if unknown:
        raise DataImportError(
            f"--mapping {path}: unknown keys {unknown}; allowed: labels, confidence, "
            "subject_pattern"
        )
    labels = {str(k): (None if v is None else str(v)) for k, v in raw["labels"].items()}
    confidence = raw.get("confidence", 1.0)
    if not isinstance(confidence, int | float) or not 0.0 <= confidence <= 1.0:
        raise DataImportError(f"--mapping {path}: confidence must be a number in [0, 1]")
    pattern = raw.get("subject_pattern")
    if pattern is not None:
        try:
            if "subject" not in re.compile(pattern).groupindex:
                raise DataImportError(
                    f"--mapping {path}: subject_pattern needs a named group (?P<subject>...)"
                )
        except re.error as err:
            raise DataImportError(f"--mapping {path}: subject_pattern: {err}") from None
    return Mapping(labels, float(confidence), pattern)


def subject_from_pattern(pattern: str | None, stem: str) -> str | None:
    """The ``subject`` group of ``pattern`` matched against a file stem, if any."""
    if pattern is None:
        return None
    match = re.search(pattern, stem)
    return match.group("subject") if match and match.group("subject") else None


def build_report(
    emotion: str, candidate: Candidate, modalities: list[str], confidence: float
) -> Report:
    """The training target for one imported sample.

    Only what the source tells is filled in: the emotion (from the mapped class), the
    vocalisation when the source names it, a summary that states the recording context,
    and the emotion's arousal and advice from :mod:`purrsight.vocabulary` (the demo data's
    too, so imported and generated reports read alike). Visual cues are unknown for these
    sets and stay null.
    """
    label_words = emotion.replace("_", " ")
    if candidate.context:
        summary = f"The cat is {label_words}: {candidate.context}."
    else:
        summary = f"The cat is {label_words}."
    return Report(
        evidence=Evidence(vocalization=candidate.vocalization),
        arousal=label_arousal(emotion),
        emotion=emotion,
        confidence=confidence,
        summary=summary,
        advice=label_advice(emotion),
        modalities=modalities,
    )


def media_files(source: Path) -> list[Path]:
    """Every file under ``source`` (recursively), in a stable order."""
    return sorted(p for p in source.rglob("*") if p.is_file())


def outside_default(labels: set[str]) -> list[str]:
    """Emotions not in the default label set (the config's ``labels:`` must list them)."""
    return sorted(label for label in labels if label not in DEFAULT_LABELS)
