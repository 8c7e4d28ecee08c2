"""CatSound (Pandeya & Lee 2018; Pandeya, Kim & Lee 2018): cat sounds in 10 class folders.

Layout: ``<source>/<Class>/<file>`` with the classes Angry, Defence, Fighting, Happy,
HuntingMind, Mating, MotherCall, Paining, Resting, Warning. The set records no cat
identity, so ``subject_id`` is the file's *source prefix*: the stem without a trailing
counter (``kitten7_03.wav`` → ``kitten7``), on the assumption that clips cut from one
recording share a prefix. When that prefix is empty or just the class name
(``angry_12.wav``) nothing better is known and each file is its own subject
(``meta.subject_from = "file"``). A mapping file's ``subject_pattern`` overrides the rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from purrsight.data.importers.common import (
    Candidate,
    Mapping,
    Skipped,
    SourceInfo,
    media_files,
    subject_from_pattern,
)
from purrsight.data.media import AUDIO_EXTENSIONS

INFO = SourceInfo(
    name="CatSound",
    url=(
        "the authors (Y. R. Pandeya, J. Lee, Jeonbuk National University); described in "
        "Int. J. Fuzzy Log. Intell. Syst. 18(2):154-160 (2018) and Appl. Sci. 8(10):1949 (2018)"
    ),
    citation=(
        "Pandeya, Kim, Lee: Domestic Cat Sound Classification Using Learned Features from "
        "Deep Neural Nets, Applied Sciences 8(10):1949, 2018, doi:10.3390/app8101949"
    ),
    licence="not stated with the data that we could find: ask the authors before any use",
    subjects=(
        "the file name's prefix without its trailing counter (no cat ids are published); "
        "files whose prefix is empty or the class name are each their own subject"
    ),
)

# What each class is, for the summary and the vocalisation evidence.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "Angry": ("its call was recorded as angry", "angry call"),
    "Defence": ("its call was recorded as defensive", "defensive call"),
    "Fighting": ("its call was recorded during a fight", "fighting call"),
    "Happy": ("its call was recorded as happy", "happy call"),
    "HuntingMind": ("its call was recorded while it was in a hunting mood", "hunting call"),
    "Mating": ("its call was recorded as a mating call", "mating call"),
    "MotherCall": ("its call was recorded as a mother calling her kittens", "mother's call"),
    "Paining": ("its call was recorded as a cry of pain", "pain cry"),
    "Resting": ("its sound was recorded while it was resting", "resting sound"),
    "Warning": ("its call was recorded as a warning", "warning call"),
}
# Class → emotion; the reasons are in docs/DATASETS.md. Mating and MotherCall are calls
# for another cat, nearest to "demanding" (insistent calling for someone).
DEFAULT_MAPPING: dict[str, str | None] = {
    "Angry": "aggressive",
    "Defence": "fearful",
    "Fighting": "aggressive",
    "Happy": "content",
    "HuntingMind": "curious",
    "Mating": "demanding",
    "MotherCall": "demanding",
    "Paining": "in_pain",
    "Resting": "content",
    "Warning": "aggressive",
}

COUNTER = re.compile(r"^(?P<subject>.*?)[\s_.\-]*\(?\d+\)?$")


def source_prefix(stem: str, source_label: str) -> str | None:
    """The stem without its trailing counter; None when that leaves nothing useful."""
    match = COUNTER.match(stem)
    prefix = match["subject"] if match else stem
    if not prefix or prefix.lower() == source_label.lower():
        return None
    return prefix


def scan(source: Path, mapping: Mapping) -> tuple[list[Candidate], list[Skipped]]:
    """Candidates from the audio files inside class folders; the rest is skipped."""
    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    for path in media_files(source):
        rel = Path(path.relative_to(source))
        if len(rel.parts) < 2:
            skipped.append(
                Skipped(rel.as_posix(), "outside a label folder", "not inside a class folder")
            )
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            skipped.append(Skipped(rel.as_posix(), "not media", "not an audio file"))
            continue
        label = rel.parts[0]
        subject = subject_from_pattern(mapping.subject_pattern, path.stem)
        if subject is None and mapping.subject_pattern is None:
            subject = source_prefix(path.stem, label)
        subject_from = "prefix" if subject else "file"
        context, vocalization = DESCRIPTIONS.get(label, (None, None))
        candidates.append(
            Candidate(
                key=rel.with_suffix("").as_posix(),
                source_label=label,
                subject_id=subject or f"{label}/{path.stem}",
                audio=path,
                context=context,
                vocalization=vocalization,
                meta={"subject_from": subject_from},
            )
        )
    return candidates, skipped
