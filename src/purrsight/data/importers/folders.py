"""Any tree of ``<label>/<files>`` of images and/or sounds.

    <source>/<label>/<stem>.jpg              one sample per stem; an image and a sound
    <source>/<label>/<stem>.wav              with the same stem are one paired sample
    <source>/<label>/<subject>/<stem>.png    a subfolder names the subject (the cat)

Without a subfolder (or a mapping ``subject_pattern``) the subject is unknown:
``subject_id`` stays null and a split treats each such sample as its own group. The
label is the top folder's name; without a mapping file every folder name is a label.
"""

from __future__ import annotations

from pathlib import Path

from purrsight.data.importers.common import (
    Candidate,
    Mapping,
    Skipped,
    SourceInfo,
    media_files,
    subject_from_pattern,
)
from purrsight.data.media import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

INFO = SourceInfo(
    name="Folders of labelled media",
    url="a local folder tree <label>/[<subject>/]<files>",
    citation="(your own data: say where it comes from here)",
    licence="(your own data: state its licence here)",
    subjects="the subfolder under each label folder, or a mapping's subject_pattern; else none",
)

DEFAULT_MAPPING: dict[str, str | None] = {}
"""Empty: every label folder maps to its own name (see :func:`mapping_for`)."""


def _modality(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    return None


def label_folders(source: Path) -> list[str]:
    return sorted(p.name for p in source.iterdir() if p.is_dir())


def scan(source: Path, mapping: Mapping) -> tuple[list[Candidate], list[Skipped]]:
    """One candidate per (folder, stem); the second image or sound of a stem is skipped."""
    groups: dict[str, Candidate] = {}
    skipped: list[Skipped] = []
    for path in media_files(source):
        rel = Path(path.relative_to(source))
        if len(rel.parts) < 2:
            skipped.append(
                Skipped(rel.as_posix(), "outside a label folder", "not inside a label folder")
            )
            continue
        modality = _modality(path)
        if modality is None:
            skipped.append(Skipped(rel.as_posix(), "not media", "not an image or audio file"))
            continue
        key = rel.with_suffix("").as_posix()
        candidate = groups.get(key)
        if candidate is None:
            subject = subject_from_pattern(mapping.subject_pattern, path.stem)
            if subject is None and len(rel.parts) > 2:
                subject = rel.parts[1]
            candidate = groups[key] = Candidate(
                key=key, source_label=rel.parts[0], subject_id=subject
            )
        if getattr(candidate, modality) is not None:
            first = getattr(candidate, modality).relative_to(source).as_posix()
            skipped.append(
                Skipped(rel.as_posix(), "duplicate stem", f"a second {modality} for {first}")
            )
            continue
        setattr(candidate, modality, path)
    return list(groups.values()), skipped


def mapping_for(source: Path, mapping: Mapping) -> Mapping:
    """Without a mapping file, every label folder maps to its own name."""
    if mapping.labels:
        return mapping
    identity = {name: name for name in label_folders(source)}
    return Mapping(identity, mapping.confidence, mapping.subject_pattern)
