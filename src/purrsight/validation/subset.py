"""A small copy of the data set (a few JSONL lines and their media) for the short run.

Media paths in a JSONL are relative to its folder and may not leave it (symlinks are
resolved and refused too), so the chosen samples' files are copied, not linked.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from purrsight.data.manifest import Sample
from purrsight.vocabulary import MEDIA_MODALITIES

PHASE2_FIELDS = MEDIA_MODALITIES


def write_subset(splits: dict[str, Sequence[Sample]], dest: Path) -> Path:
    """Write ``<dest>/<split>.jsonl`` with the samples' original lines and copy their image
    and audio files to the same relative paths under ``dest`` (video, which Phase 2
    ignores, is dropped). Returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for split, samples in splits.items():
        lines = []
        for sample in samples:
            file, _, number = sample.source.rpartition(":")
            raw = json.loads(_line(Path(file), int(number)))
            raw["video"] = None
            for name in PHASE2_FIELDS:
                if raw.get(name):
                    target = dest / raw[name]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(Path(file).parent / raw[name], target)
            lines.append(json.dumps(raw))
        if lines:
            (dest / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _line(path: Path, number: int) -> str:
    with path.open(encoding="utf-8") as handle:
        for i, text in enumerate(handle, start=1):
            if i == number:
                return text
    raise ValueError(f"{path}: no line {number}")
