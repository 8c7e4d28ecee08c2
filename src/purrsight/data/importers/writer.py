"""Scanned candidates → ``<out>/all.jsonl`` + ``<out>/media/…`` + card + import report.

Media are hard-linked (or copied where a link is impossible, e.g. across file systems)
to ``<out>/media/<path in the source folder>``, so the JSONL's paths are relative,
stay inside its folder (what :mod:`purrsight.data.manifest` requires), and keep working
when the source folder is moved or deleted. Every file is decoded once here with the
same loaders training uses; one that does not decode is reported, not written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from purrsight.data.importers.card import render_card
from purrsight.data.importers.common import (
    Candidate,
    DataImportError,
    Mapping,
    Skipped,
    SourceInfo,
    build_report,
)
from purrsight.data.media import MediaError, load_audio, load_image
from purrsight.files import atomic_write
from purrsight.vocabulary import (
    AUDIO,
    AUDIO_INSTRUCTION,
    DEFAULT_INSTRUCTION,
    IMAGE,
    IMAGE_INSTRUCTION,
    MEDIA_MODALITIES,
)

CHECK_SAMPLE_RATE = 16_000  # any rate works for a decode check; 16 kHz is cheap
INSTRUCTIONS = {
    MEDIA_MODALITIES: DEFAULT_INSTRUCTION,
    (IMAGE,): IMAGE_INSTRUCTION,
    (AUDIO,): AUDIO_INSTRUCTION,
}


@dataclass
class ImportResult:
    """What an import wrote and what it left out."""

    out: Path
    jsonl: Path
    card: Path
    report: Path
    records: list[dict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts for the console: samples, labels, subjects, skipped by reason."""
        return {
            "jsonl": str(self.jsonl),
            "samples": len(self.records),
            "labels": dict(sorted(Counter(r["label"] for r in self.records).items())),
            "subjects": len({r["subject_id"] for r in self.records if r["subject_id"]}),
            "skipped": dict(sorted(Counter(s.kind for s in self.skipped).items())),
            "card": str(self.card),
        }


def _check_out(out: Path, source: Path) -> None:
    if out.resolve().is_relative_to(source.resolve()):
        raise DataImportError(
            f"--out {out} lies inside the source folder {source}; choose a folder outside it"
        )
    if out.exists() and any(out.iterdir()):
        raise DataImportError(f"--out {out} is not empty; choose a new folder or remove it")


def _place(src: Path, dest: Path, copy: bool) -> None:
    """Hard-link ``src`` to ``dest`` (no extra disk space), else copy it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(src, dest)
            return
        except OSError:  # other file system, or links not allowed: copy instead
            pass
    shutil.copy2(src, dest)


def _decodes(modality: str, path: Path) -> str | None:
    """None when ``path`` decodes, else the reason."""
    try:
        if modality == "image":
            load_image(path)
        else:
            load_audio(path, CHECK_SAMPLE_RATE)
    except MediaError as err:
        return err.reason
    return None


def _unique_id(key: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-") or "sample"
    sample_id, n = base, 1
    while sample_id in used:
        n += 1
        sample_id = f"{base}-{n}"
    used.add(sample_id)
    return sample_id


def _record(
    candidate: Candidate, emotion: str, media: dict[str, str], mapping: Mapping, sample_id: str
) -> dict:
    modalities = [m for m in MEDIA_MODALITIES if m in media]
    report = build_report(emotion, candidate, modalities, mapping.confidence)
    return {
        "id": sample_id,
        "image": media.get("image"),
        "audio": media.get("audio"),
        "video": None,
        "instruction": INSTRUCTIONS[tuple(modalities)],
        "response": report.model_dump(mode="json"),
        "label": emotion,
        "subject_id": candidate.subject_id,
        "meta": {"source_label": candidate.source_label, **candidate.meta},
    }


def write_import(
    info: SourceInfo,
    kind: str,
    source: Path,
    out: Path,
    candidates: list[Candidate],
    skipped: list[Skipped],
    mapping: Mapping,
    copy: bool = False,
) -> ImportResult:
    """Map, decode-check, link and write; returns the result (also in the files)."""
    _check_out(out, source)
    out.mkdir(parents=True, exist_ok=True)
    result = ImportResult(
        out, out / "all.jsonl", out / "dataset_card.md", out / "import_report.json"
    )
    result.skipped = list(skipped)
    used: set[str] = set()
    for candidate in sorted(candidates, key=lambda c: c.key):
        files = {m: getattr(candidate, m) for m in MEDIA_MODALITIES if getattr(candidate, m)}
        emotion = mapping.emotion(candidate.source_label)
        if isinstance(emotion, Skipped):
            for path in files.values():
                rel = path.relative_to(source).as_posix()
                result.skipped.append(Skipped(rel, emotion.kind, emotion.reason))
            continue
        media: dict[str, str] = {}
        for modality, path in files.items():
            rel = path.relative_to(source).as_posix()
            reason = _decodes(modality, path)
            if reason is not None:
                result.skipped.append(Skipped(rel, "undecodable", reason))
                continue
            _place(path, out / "media" / rel, copy)
            media[modality] = f"media/{rel}"
        if media:  # a pair whose one file failed keeps the other modality
            sample_id = _unique_id(candidate.key, used)
            result.records.append(_record(candidate, emotion, media, mapping, sample_id))
    _write(result, info, kind, source, mapping)
    return result


def _write(result: ImportResult, info: SourceInfo, kind: str, source: Path, mapping: Mapping):
    atomic_write(
        result.jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records)
    )
    result.skipped.sort(key=lambda s: (s.kind, s.path))
    report = {
        **result.summary(),
        "kind": kind,
        "source": str(source),
        "mapping": mapping.labels,
        "skipped_files": [
            {"path": s.path, "kind": s.kind, "reason": s.reason} for s in result.skipped
        ],
    }
    atomic_write(result.report, json.dumps(report, indent=2) + "\n")
    atomic_write(
        result.card, render_card(info, kind, source, result.records, result.skipped, mapping)
    )
