"""Small synthetic source folders that follow each public data set's layout exactly.

Audio is generated with numpy + soundfile, images with Pillow; no real data is used.
Each clip's pitch depends on its context/class and its seed on the file name, so files
differ byte for byte (the split's duplicate check must not fire on them by accident).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

CONTEXT_PITCH = {"B": 300.0, "F": 600.0, "I": 900.0}


def write_wav(path: Path, pitch: float = 440.0, seconds: float = 0.5, rate: int = 16_000) -> Path:
    """A short tone with a little noise, seeded by the file name."""
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.02 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate)
    return path


def write_png(path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def catmeows_name(context: str, cat: str, breed: str, sex: str, owner: str, session: int, n: int):
    """``C_NNNNN_BB_SS_OOOOO_RXX.wav``."""
    return f"{context}_{cat}_{breed}_{sex}_{owner}_{session}{n:02d}.wav"


# (cat id, breed, sex, owner)
CATS = (
    ("ANI01", "MC", "FN", "SIM01"),
    ("BAC01", "EU", "MN", "OWN02"),
    ("CAN01", "EU", "FI", "OWN03"),
    ("DAK01", "MC", "MI", "SIM01"),
)


def make_catmeows(root: Path, cats=CATS, per_context: int = 2, seconds: float = 0.5) -> Path:
    """Every cat meows ``per_context`` times in each context, in the Zenodo layout
    (files in one ``dataset/`` folder)."""
    folder = root / "dataset"
    for cat, breed, sex, owner in cats:
        for session, context in enumerate("BFI", start=1):
            for n in range(1, per_context + 1):
                name = catmeows_name(context, cat, breed, sex, owner, session, n)
                write_wav(folder / name, CONTEXT_PITCH[context], seconds)
    return root


def make_catsound(root: Path, per_class: int = 2) -> Path:
    """The ten class folders, files named ``<source><k>_<counter>.wav``."""
    classes = (
        "Angry",
        "Defence",
        "Fighting",
        "Happy",
        "HuntingMind",
        "Mating",
        "MotherCall",
        "Paining",
        "Resting",
        "Warning",
    )
    for c, label in enumerate(classes):
        for n in range(per_class):
            write_wav(root / label / f"clip{c}_{n + 1:02d}.wav", 200.0 + 50 * c)
    return root
