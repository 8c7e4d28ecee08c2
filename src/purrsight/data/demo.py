"""Deterministic procedural demo data: cartoon cats and synthetic cat sounds with emotion labels.

The demo data lets every part of Purr-Sight (import, alignment, fine-tuning, reports) run on a
fresh machine with no downloads. It is built so that a model has to *learn* something:

* Each visual cue (ears, eyes, mouth, tail, posture) and each sound kind is drawn from a
  label-dependent probability table. The tables overlap (fearful and aggressive cats both flatten
  their ears; content and in-pain cats both lie down), so no single cue, pixel or constant gives
  the label away; only combinations do, and only most of the time.
* Everything else (fur, pattern, size, position, facing, background, noise, pitch, loudness,
  timing) varies at random.
* Every random draw comes from a ``numpy.random.Generator`` derived from one ``SeedSequence``,
  one independent stream per sample, so the same seed gives byte-identical files.

Only numpy, Pillow and soundfile are used here (no torch, no librosa), so the generator is cheap
to import and runs anywhere.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

from purrsight.report import Report
from purrsight.vocabulary import (
    ADVICE,
    AROUSAL_LEVELS,
    AUDIO_INSTRUCTION,
    DEFAULT_INSTRUCTION,
    DEFAULT_LABELS,
    GENERIC_ADVICE,
    IMAGE_INSTRUCTION,
    WELFARE_LABELS,
    label_arousal,
)

Color = tuple[int, int, int]
Point = tuple[float, float]

SPLITS: tuple[str, ...] = ("train", "val", "test")
EARS: tuple[str, ...] = ("upright", "forward", "sideways", "flattened")
EYES: tuple[str, ...] = ("half-closed", "normal", "wide", "dilated")
MOUTHS: tuple[str, ...] = ("closed", "meow", "hiss")
TAILS: tuple[str, ...] = ("up", "up with hooked tip", "wrapped", "low", "puffed", "lashing")
POSTURES: tuple[str, ...] = (
    "lying loaf",
    "sitting",
    "standing",
    "crouched",
    "arched back",
    "hunched",
)
SOUND_KINDS: tuple[str, ...] = ("meow", "purr", "hiss", "growl", "trill", "yowl", "quiet")

# Label -> cue -> {value: weight}. The weights overlap on purpose: a classifier that keys on one
# cue is wrong a good part of the time, while the combination of cues (and the sound) is informative.
CUE_TABLES: dict[str, dict[str, dict[str, float]]] = {
    "content": {
        "ears": {"upright": 0.6, "forward": 0.3, "sideways": 0.1},
        "eyes": {"half-closed": 0.6, "normal": 0.4},
        "mouth": {"closed": 0.9, "meow": 0.1},
        "tail": {"wrapped": 0.35, "low": 0.25, "up": 0.25, "up with hooked tip": 0.15},
        "posture": {"lying loaf": 0.45, "sitting": 0.35, "standing": 0.1, "hunched": 0.1},
        "sound": {"purr": 0.6, "quiet": 0.25, "trill": 0.15},
    },
    "playful": {
        "ears": {"forward": 0.5, "upright": 0.4, "sideways": 0.1},
        "eyes": {"wide": 0.4, "dilated": 0.35, "normal": 0.25},
        "mouth": {"closed": 0.7, "meow": 0.3},
        "tail": {"up with hooked tip": 0.3, "lashing": 0.3, "up": 0.2, "low": 0.2},
        "posture": {"crouched": 0.45, "standing": 0.3, "sitting": 0.15, "arched back": 0.1},
        "sound": {"trill": 0.4, "quiet": 0.35, "meow": 0.25},
    },
    "curious": {
        "ears": {"forward": 0.6, "upright": 0.4},
        "eyes": {"wide": 0.5, "normal": 0.5},
        "mouth": {"closed": 0.85, "meow": 0.15},
        "tail": {"up": 0.35, "up with hooked tip": 0.35, "low": 0.15, "lashing": 0.15},
        "posture": {"standing": 0.5, "sitting": 0.3, "crouched": 0.2},
        "sound": {"trill": 0.4, "meow": 0.3, "quiet": 0.3},
    },
    "demanding": {
        "ears": {"upright": 0.6, "forward": 0.4},
        "eyes": {"normal": 0.6, "wide": 0.4},
        "mouth": {"meow": 0.7, "closed": 0.3},
        "tail": {"up": 0.6, "up with hooked tip": 0.25, "lashing": 0.15},
        "posture": {"standing": 0.5, "sitting": 0.5},
        "sound": {"meow": 0.65, "yowl": 0.2, "trill": 0.15},
    },
    "fearful": {
        "ears": {"flattened": 0.55, "sideways": 0.45},
        "eyes": {"dilated": 0.7, "wide": 0.3},
        "mouth": {"hiss": 0.45, "closed": 0.4, "meow": 0.15},
        "tail": {"low": 0.4, "puffed": 0.3, "wrapped": 0.3},
        "posture": {"crouched": 0.5, "arched back": 0.3, "hunched": 0.2},
        "sound": {"hiss": 0.5, "growl": 0.25, "quiet": 0.25},
    },
    "aggressive": {
        "ears": {"flattened": 0.45, "sideways": 0.45, "forward": 0.1},
        "eyes": {"dilated": 0.4, "normal": 0.3, "wide": 0.3},
        "mouth": {"hiss": 0.6, "closed": 0.2, "meow": 0.2},
        "tail": {"lashing": 0.45, "puffed": 0.35, "low": 0.2},
        "posture": {"arched back": 0.4, "standing": 0.35, "crouched": 0.25},
        "sound": {"growl": 0.45, "hiss": 0.35, "yowl": 0.2},
    },
    "in_pain": {
        "ears": {"sideways": 0.6, "flattened": 0.3, "upright": 0.1},
        "eyes": {"half-closed": 0.7, "normal": 0.3},
        "mouth": {"closed": 0.8, "meow": 0.2},
        "tail": {"low": 0.5, "wrapped": 0.5},
        "posture": {"hunched": 0.55, "lying loaf": 0.3, "crouched": 0.15},
        "sound": {"yowl": 0.35, "meow": 0.3, "growl": 0.15, "purr": 0.2},
    },
}

# Labels a reader (or a model) most plausibly confuses with each label, most likely first.
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "content": ("in_pain", "curious", "playful"),
    "playful": ("curious", "aggressive", "demanding"),
    "curious": ("playful", "demanding", "fearful"),
    "demanding": ("curious", "playful", "in_pain"),
    "fearful": ("aggressive", "in_pain", "curious"),
    "aggressive": ("fearful", "playful", "in_pain"),
    "in_pain": ("fearful", "content", "aggressive"),
}

SUMMARY_OPENINGS: dict[str, tuple[str, ...]] = {
    "content": (
        "The cat looks relaxed and content",
        "This cat seems calm and content",
        "A content, comfortable cat",
        "The cat appears peaceful and content",
    ),
    "playful": (
        "The cat is in a playful mood",
        "This cat looks playful and ready to pounce",
        "A playful, energetic cat",
        "The cat seems playful and full of energy",
    ),
    "curious": (
        "The cat looks curious and alert",
        "This cat seems curious about something",
        "An inquisitive, curious cat",
        "The cat is curious and investigating",
    ),
    "demanding": (
        "The cat is demanding attention",
        "This cat wants something and is demanding it",
        "A demanding cat asking for food or attention",
        "The cat looks insistent and demanding",
    ),
    "fearful": (
        "The cat looks frightened and fearful",
        "This cat seems scared and defensive",
        "A fearful cat that wants to get away",
        "The cat appears anxious and afraid",
    ),
    "aggressive": (
        "The cat looks aggressive and ready to fight",
        "This cat seems angry and aggressive",
        "An aggressive, threatening cat",
        "The cat appears hostile and aggressive",
    ),
    "in_pain": (
        "The cat may be in pain",
        "This cat shows signs of pain or discomfort",
        "A cat that seems to be hurting",
        "The cat looks unwell and possibly in pain",
    ),
}

SOUND_PHRASES: dict[str, str] = {
    "purr": "purring softly",
    "meow": "meowing",
    "hiss": "hissing",
    "growl": "growling",
    "trill": "trilling",
    "yowl": "yowling loudly",
}
POSTURE_PHRASES: dict[str, str] = {
    "lying loaf": "lying tucked up in a loaf",
    "sitting": "sitting upright",
    "standing": "standing",
    "crouched": "crouching low",
    "arched back": "with an arched back",
    "hunched": "sitting hunched",
}
EAR_PHRASES: dict[str, str] = {
    "upright": "with ears upright",
    "forward": "with ears pointed forward",
    "sideways": "with ears turned sideways",
    "flattened": "with ears flattened back",
}
TAIL_PHRASES: dict[str, str] = {
    "up": "with the tail held high",
    "up with hooked tip": "with its tail up and hooked at the tip",
    "wrapped": "with the tail wrapped around it",
    "low": "with the tail held low",
    "puffed": "with a puffed-up tail",
    "lashing": "lashing its tail",
}
EYE_PHRASES: dict[str, str] = {
    "half-closed": "with half-closed eyes",
    "wide": "with wide-open eyes",
    "dilated": "with dilated pupils",
}

INSTRUCTIONS_ANY: tuple[str, ...] = (
    DEFAULT_INSTRUCTION,
    "What emotion is this cat showing?",
    "Describe the cat's emotional state.",
    "Read this cat's mood and tell me what to do.",
    "Is this cat okay? Give me a report.",
)
INSTRUCTIONS_IMAGE: tuple[str, ...] = (IMAGE_INSTRUCTION,)
INSTRUCTIONS_AUDIO: tuple[str, ...] = (AUDIO_INSTRUCTION,)

# Fur colours of common coats; each subject jitters its own.
FUR_COLORS: tuple[Color, ...] = (
    (214, 137, 64),  # orange
    (232, 178, 112),  # light ginger
    (128, 128, 136),  # grey
    (84, 84, 92),  # dark grey
    (38, 36, 40),  # black
    (122, 88, 62),  # brown
    (236, 218, 186),  # cream
    (242, 240, 234),  # white
    (178, 176, 182),  # silver
)
EYE_COLORS: tuple[Color, ...] = (
    (120, 190, 70),  # green
    (230, 200, 60),  # yellow
    (215, 140, 40),  # amber
    (90, 160, 225),  # blue
    (190, 110, 40),  # copper
)
PATTERNS: tuple[str, ...] = ("solid", "tabby", "bicolor")
PINK: Color = (232, 150, 160)
DARK: Color = (25, 20, 22)


# ----------------------------------------------------------------------------------------------
# Cat appearance and cues
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatAppearance:
    """Fixed traits of one synthetic cat, drawn once per subject so it looks the same each time."""

    fur: Color
    accent: Color  # stripes for tabbies
    pattern: str  # one of PATTERNS
    eye_color: Color
    body_size: float  # overall scale, ~0.85-1.1
    chubbiness: float  # body thickness, ~0.9-1.2
    ear_size: float  # ~0.85-1.15
    tail_length: float  # ~0.85-1.15


@dataclass(frozen=True)
class Pose:
    """The emotion-dependent cues drawn in one picture."""

    ears: str
    eyes: str
    mouth: str
    tail: str
    posture: str


def random_appearance(rng: np.random.Generator) -> CatAppearance:
    """Draw a random cat's fixed appearance."""
    base = np.array(FUR_COLORS[int(rng.integers(len(FUR_COLORS)))], dtype=float)
    fur = np.clip(base + rng.normal(0.0, 8.0, 3), 0, 255)
    # Stripes must be visible on light and dark coats alike.
    accent = fur * 0.6 if fur.mean() > 70 else fur + 45.0
    return CatAppearance(
        fur=_rgb(fur),
        accent=_rgb(np.clip(accent, 0, 255)),
        pattern=PATTERNS[int(rng.choice(len(PATTERNS), p=[0.4, 0.35, 0.25]))],
        eye_color=EYE_COLORS[int(rng.integers(len(EYE_COLORS)))],
        body_size=float(rng.uniform(0.85, 1.1)),
        chubbiness=float(rng.uniform(0.9, 1.2)),
        ear_size=float(rng.uniform(0.85, 1.15)),
        tail_length=float(rng.uniform(0.85, 1.15)),
    )


def cue_profile(label: str, labels: Sequence[str] = DEFAULT_LABELS) -> str:
    """Name of the cue table used for ``label``.

    A label outside the default set borrows the table of the default label at its position in
    ``labels``, so custom label sets still get distinct (if arbitrary) looks and sounds.
    """
    if label in CUE_TABLES:
        return label
    index = list(labels).index(label) if label in labels else 0
    return DEFAULT_LABELS[index % len(DEFAULT_LABELS)]


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    """Draw one key of ``table`` with probability proportional to its weight."""
    keys = list(table)
    weights = np.array([table[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=weights / weights.sum()))]


def sample_pose(rng: np.random.Generator, label: str) -> Pose:
    """Draw the visual cues of one picture of a cat feeling ``label``."""
    table = CUE_TABLES[cue_profile(label)]
    posture = _pick(rng, table["posture"])
    tail = _pick(rng, table["tail"])
    # A tail cannot wrap around the paws of a cat standing on stiff legs; it then hangs low.
    if tail == "wrapped" and posture in ("standing", "arched back"):
        tail = "low"
    return Pose(
        ears=_pick(rng, table["ears"]),
        eyes=_pick(rng, table["eyes"]),
        mouth=_pick(rng, table["mouth"]),
        tail=tail,
        posture=posture,
    )


def sample_sound_kind(rng: np.random.Generator, label: str) -> str:
    """Draw the kind of vocalisation a cat feeling ``label`` makes."""
    return _pick(rng, CUE_TABLES[cue_profile(label)]["sound"])


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


@dataclass
class _Figure:
    """Where the parts of a cat are, in the cat layer's pixel coordinates (y grows downwards)."""

    u: float  # one body unit in pixels
    ground: float
    head: tuple[float, float, float]  # centre x, centre y, radius
    tail_base: Point
    chest: tuple[float, float, float, float]  # centre x, centre y, radius x, radius y
    paws: list[Point]


def _rgb(values) -> Color:
    """Round an array-like of three channel values to an 8-bit colour tuple."""
    r, g, b = (int(round(float(v))) for v in values)
    return (r, g, b)


def _shade(color: Color, factor: float) -> Color:
    """Darken (factor < 1) or lighten (factor > 1) a colour."""
    if factor <= 1.0:
        return _rgb(np.array(color) * factor)
    return _rgb(255 - (255 - np.array(color, dtype=float)) / factor)


def _limb(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, width: float, fill=255) -> None:
    """A leg-like bar with rounded ends."""
    r = width / 2
    draw.line([p0, p1], fill=fill, width=max(1, int(round(width))))
    for x, y in (p0, p1):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, **kw) -> None:
    """Draw an ellipse given by centre and radii."""
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), **kw)


def _rotated_ellipse(cx: float, cy: float, a: float, b: float, angle_deg: float) -> list[Point]:
    """Polygon of an ellipse with semi-axes a, b rotated by angle (counter-clockwise on screen)."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = a * np.cos(t), b * np.sin(t)
    return list(zip((cx + c * x + s * y).tolist(), (cy - s * x + c * y).tolist(), strict=True))


def _body_shapes(draw, rng, posture: str, cat: CatAppearance, u: float, cx: float, gy: float):
    """Draw the silhouette of body, legs and head for ``posture`` into ``draw`` (a mask).

    Returns the figure's anchor points. Every posture is a side view facing right with the face
    turned to the viewer, the way cartoon cats are drawn, so both eyes and ears are visible.
    """
    c = cat.chubbiness
    r = u * float(rng.uniform(0.95, 1.08))
    j = lambda s=0.12: float(rng.normal(0.0, s)) * u  # noqa: E731 - small positional jitter
    leg = 0.5 * u
    if posture == "standing":
        cy = gy - 3.1 * u
        _ellipse(draw, cx, cy, 2.1 * u, 0.95 * c * u, fill=255)
        _ellipse(draw, cx - 1.35 * u, cy + 0.1 * u, 0.8 * u, 1.05 * u, fill=255)  # haunch
        feet = [cx - 1.6 * u, cx - 1.0 * u, cx + 1.1 * u, cx + 1.65 * u]
        paws = [(x + j(0.06), gy - leg / 2) for x in feet]
        for (x, y), x0 in zip(paws, feet, strict=True):
            _limb(draw, (x0, cy + 0.2 * u), (x, y), leg)
        head = (cx + 2.3 * u + j(), cy - 1.3 * u + j(), r)
        draw.polygon(
            [(cx + 1.0 * u, cy - 0.7 * u), head[:2], (cx + 1.9 * u, cy + 0.6 * u)], fill=255
        )
        tail_base = (cx - 2.0 * u, cy - 0.4 * u)
        chest = (cx + 1.75 * u, cy + 0.2 * u, 0.55 * u, 0.75 * u)
    elif posture == "sitting":
        _ellipse(draw, cx - 0.9 * u, gy - 1.1 * u, 1.25 * u, 1.1 * u, fill=255)  # haunch
        draw.polygon(_rotated_ellipse(cx, gy - 2.2 * u, 1.9 * u, 1.0 * c * u, 65.0), fill=255)
        paws = [(cx + 0.55 * u + j(0.05), gy - leg / 2), (cx + 1.05 * u + j(0.05), gy - leg / 2)]
        for x, y in paws:
            _limb(draw, (x - 0.1 * u, gy - 2.2 * u), (x, y), leg)
        paws.append((cx - 0.2 * u, gy - leg / 2))
        _ellipse(draw, cx - 0.2 * u, gy - 0.3 * u, 0.55 * u, 0.3 * u, fill=255)  # back foot
        head = (cx + 0.85 * u + j(), gy - 4.3 * u + j(), r)
        tail_base = (cx - 1.9 * u, gy - 0.45 * u)
        chest = (cx + 0.75 * u, gy - 2.7 * u, 0.6 * u, 0.9 * u)
    elif posture == "lying loaf":
        _ellipse(draw, cx, gy - 1.05 * c * u, 2.2 * u, 1.05 * c * u, fill=255)
        paws = [(cx + 2.0 * u, gy - 0.25 * u), (cx + 1.5 * u, gy - 0.22 * u)]
        for x, y in paws:
            _ellipse(draw, x, y, 0.4 * u, 0.25 * u, fill=255)
        head = (cx + 1.9 * u + j(), gy - 2.1 * c * u + j(), r)
        tail_base = (cx - 2.0 * u, gy - 0.5 * u)
        chest = (cx + 1.7 * u, gy - 0.9 * u, 0.5 * u, 0.6 * u)
    elif posture == "crouched":
        # Belly close to the floor, rear end a little raised, front legs folded forward, head
        # low and stretched out: the stalking / cowering crouch.
        draw.polygon(_rotated_ellipse(cx, gy - 1.15 * u, 2.15 * u, 0.75 * c * u, -8.0), fill=255)
        _ellipse(draw, cx - 1.45 * u, gy - 1.2 * u, 0.85 * u, 0.95 * u, fill=255)  # haunch
        _ellipse(draw, cx - 1.1 * u, gy - 0.22 * u, 0.75 * u, 0.22 * u, fill=255)  # hind foot
        paws = [(cx + 2.35 * u + j(0.05), gy - 0.22 * u), (cx + 1.95 * u, gy - 0.22 * u)]
        for x, y in paws:
            _limb(draw, (x - 1.0 * u, gy - 0.8 * u), (x, y), 0.45 * u)
        paws.append((cx - 1.1 * u, gy - 0.22 * u))
        head = (cx + 2.55 * u + j(), gy - 1.45 * u + j(0.06), r)
        tail_base = (cx - 2.1 * u, gy - 1.4 * u)
        chest = (cx + 1.8 * u, gy - 0.9 * u, 0.5 * u, 0.5 * u)
    elif posture == "arched back":
        t = np.linspace(-1.0, 1.0, 25)
        xs = cx + 2.1 * u * t
        top = gy - 3.7 * u - 2.2 * u * (1 - t**2)
        bottom = top + (1.1 + 0.4 * (1 - t**2)) * c * u
        draw.polygon(
            list(zip(xs.tolist(), top.tolist(), strict=True))
            + list(zip(xs[::-1].tolist(), bottom[::-1].tolist(), strict=True)),
            fill=255,
        )
        for k in (0, -1):
            _ellipse(draw, xs[k], (top[k] + bottom[k]) / 2, 0.7 * u, 0.75 * u, fill=255)
        feet = [cx - 1.9 * u, cx - 1.4 * u, cx + 1.4 * u, cx + 1.9 * u]
        paws = [(x, gy - leg / 2) for x in feet]
        for x, y in paws:
            _limb(draw, (x * 0.9 + cx * 0.1, gy - 3.5 * u), (x, y), leg)
        head = (cx + 2.5 * u + j(), gy - 3.7 * u + j(), r)
        tail_base = (cx - 2.2 * u, gy - 3.9 * u)
        chest = (cx + 2.0 * u, gy - 3.2 * u, 0.5 * u, 0.6 * u)
    elif posture == "hunched":
        # Taller than long, back rounded up, feet tucked under and the head pulled in low in
        # front of the body: the typical pose of a cat in pain (a loaf is long and flat).
        draw.polygon(
            _rotated_ellipse(cx - 0.2 * u, gy - 1.55 * c * u, 1.7 * u, 1.45 * c * u, -12.0),
            fill=255,
        )
        paws = [(cx + 1.1 * u, gy - 0.22 * u), (cx + 0.7 * u, gy - 0.2 * u)]
        for x, y in paws:
            _ellipse(draw, x, y, 0.38 * u, 0.22 * u, fill=255)
        head = (cx + 1.45 * u + j(0.06), gy - 1.45 * u + j(0.06), r * 0.95)
        tail_base = (cx - 1.8 * u, gy - 0.6 * u)
        chest = (cx + 1.0 * u, gy - 0.8 * u, 0.5 * u, 0.6 * u)
    else:
        raise ValueError(f"unknown posture {posture!r}; expected one of {POSTURES}")
    hx, hy, hr = head
    _ellipse(draw, hx, hy, 1.08 * hr, 0.95 * hr, fill=255)
    return _Figure(u=u, ground=gy, head=head, tail_base=tail_base, chest=chest, paws=paws)


def _tail_path(rng, tail: str, fig: _Figure, length: float) -> list[Point]:
    """Control points of the tail, from its base, for a cat facing right."""
    bx, by = fig.tail_base
    u = fig.u * length
    shapes = {
        "up": [(0, 0), (-0.7, -1.0), (-0.8, -2.2), (-0.6, -3.2)],
        "puffed": [(0, 0), (-0.8, -0.9), (-0.9, -2.1), (-0.7, -3.0)],
        "up with hooked tip": [
            (0, 0),
            (-0.7, -1.0),
            (-0.8, -2.3),
            (-0.5, -3.1),
            (0.0, -3.3),
            (0.35, -2.9),
        ],
        "low": [(0, 0), (-0.6, 0.8), (-1.3, 1.5), (-2.2, 1.9), (-2.9, 1.8)],
        "lashing": [(0, 0), (-0.9, -0.3), (-1.7, -1.1), (-2.5, -0.6), (-3.1, -1.3)],
        "wrapped": [(0, 0), (-0.3, 0.4), (0.2, 0.7), (1.3, 0.75), (2.6, 0.7), (3.3, 0.4)],
    }
    pts = [
        (bx + (x + rng.normal(0, 0.08)) * u, by + (y + rng.normal(0, 0.08)) * u)
        for x, y in shapes[tail]
    ]
    pts[0] = (bx, by)
    if tail == "wrapped":
        # Lay the wrapped tail along the floor in front of the body, whatever the posture.
        floor = fig.ground - 0.3 * fig.u
        pts = [pts[0]] + [(x, floor) for x, _ in pts[1:-1]] + [(pts[-1][0], floor - 0.35 * u)]
    return pts


def _smooth(points: list[Point], per_segment: int = 12) -> np.ndarray:
    """Catmull-Rom spline through ``points`` (so tails bend smoothly), as an (N, 2) array."""
    p = np.array(points, dtype=float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(
            0.5
            * (
                (2 * p1)
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    out.append(p[-2][None, :])
    return np.vstack(out)


def _draw_tail(draw, rng, tail: str, fig: _Figure, length: float) -> np.ndarray:
    """Draw the tail into the silhouette mask; returns its centre line."""
    path = _smooth(_tail_path(rng, tail, fig, length))
    path[:, 1] = np.minimum(path[:, 1], fig.ground - 0.2 * fig.u)
    width = 0.42 * fig.u * (2.2 if tail == "puffed" else 1.0)
    for k, (x, y) in enumerate(path):
        taper = 1.0 - 0.35 * k / len(path)
        rad = width / 2 * taper
        if tail == "puffed":
            rad *= float(rng.uniform(0.8, 1.15))  # ragged, bristling outline
        _ellipse(draw, x, y, rad, rad, fill=255)
    return path


def _ear_triangles(state: str, head: tuple[float, float, float], size: float):
    """Outer triangles of both ears for an ear ``state``, as lists of three points."""
    hx, hy, r = head
    # base angle from vertical, tip direction from vertical, length, half width (radii of head)
    theta, phi, length, half = {
        "upright": (38, 10, 0.95, 0.42),
        "forward": (30, 0, 0.9, 0.46),
        "sideways": (58, 72, 0.85, 0.40),
        "flattened": (70, 100, 0.72, 0.36),
    }[state]
    ears = []
    for side in (-1.0, 1.0):
        th, ph = math.radians(theta), math.radians(phi)
        bx, by = hx + side * 0.85 * r * math.sin(th), hy - 0.8 * r * math.cos(th)
        tx, ty = math.cos(th), side * math.sin(th)
        b1 = (bx - half * r * tx, by - half * r * ty)
        b2 = (bx + half * r * tx, by + half * r * ty)
        tip = (bx + side * length * size * r * math.sin(ph), by - length * size * r * math.cos(ph))
        ears.append([b1, tip, b2])
    return ears


def _shrink(tri: list[Point], factor: float, toward_base: float = 0.15) -> list[Point]:
    """Shrink a triangle toward its centroid (moved a little toward the base) for the inner ear."""
    cx = sum(p[0] for p in tri) / 3
    cy = sum(p[1] for p in tri) / 3
    mx, my = (tri[0][0] + tri[2][0]) / 2, (tri[0][1] + tri[2][1]) / 2
    cx, cy = cx + (mx - cx) * toward_base, cy + (my - cy) * toward_base
    return [(cx + (x - cx) * factor, cy + (y - cy) * factor) for x, y in tri]


def _draw_eyes(draw, state: str, head, cat: CatAppearance) -> None:
    """Draw both eyes in the given state."""
    hx, hy, r = head
    e = 0.2 * r
    lid = _shade(cat.fur, 0.45)
    for side in (-1, 1):
        x, y = hx + side * 0.42 * r, hy - 0.05 * r
        if state == "half-closed":
            # Lower half of the eye under a heavy upper lid: the slow blink / squint.
            draw.chord(
                (x - 1.1 * e, y - 0.55 * e, x + 1.1 * e, y + 0.55 * e),
                0,
                180,
                fill=cat.eye_color,
                outline=DARK,
                width=max(1, int(e * 0.2)),
            )
            draw.line([(x - 1.25 * e, y), (x + 1.25 * e, y)], fill=lid, width=max(2, int(e * 0.35)))
            draw.line(
                [(x - 0.15 * e, y), (x + 0.15 * e, y + 0.5 * e)],
                fill=DARK,
                width=max(1, int(e * 0.25)),
            )
            continue
        big = 1.3 if state in ("wide", "dilated") else 1.0
        _ellipse(
            draw,
            x,
            y,
            1.1 * e * big,
            0.95 * e * big,
            fill=cat.eye_color,
            outline=DARK,
            width=max(1, int(e * 0.2)),
        )
        if state == "normal":
            _ellipse(draw, x, y, 0.25 * e, 0.85 * e, fill=DARK)  # slit pupil
        elif state == "wide":
            _ellipse(draw, x, y, 0.5 * e, 0.7 * e, fill=DARK)
        else:
            _ellipse(draw, x, y, 1.0 * e, 1.0 * e, fill=DARK)  # dilated: nearly all pupil
        _ellipse(draw, x + 0.35 * e, y - 0.35 * e, 0.18 * e, 0.18 * e, fill=(250, 250, 250))


def _draw_mouth(draw, state: str, head, cat: CatAppearance) -> None:
    """Draw muzzle, nose, whiskers and the mouth in the given state."""
    hx, hy, r = head
    w = max(1, int(r * 0.05))
    muzzle = _shade(cat.fur, 1.35) if cat.pattern != "bicolor" else (245, 243, 238)
    for side in (-1, 1):
        _ellipse(draw, hx + side * 0.17 * r, hy + 0.45 * r, 0.22 * r, 0.17 * r, fill=muzzle)
    ny = hy + 0.27 * r
    draw.polygon(
        [(hx - 0.1 * r, ny), (hx + 0.1 * r, ny), (hx, ny + 0.1 * r)], fill=PINK, outline=DARK
    )
    if state == "closed":
        draw.line([(hx, ny + 0.1 * r), (hx, ny + 0.2 * r)], fill=DARK, width=w)
        for side in (-1, 1):
            x0 = hx + side * 0.2 * r
            draw.arc(
                (min(hx, x0), ny + 0.1 * r, max(hx, x0), ny + 0.3 * r), 0, 180, fill=DARK, width=w
            )
    elif state == "meow":
        _ellipse(
            draw, hx, ny + 0.33 * r, 0.15 * r, 0.19 * r, fill=(110, 30, 40), outline=DARK, width=w
        )
        _ellipse(draw, hx, ny + 0.43 * r, 0.09 * r, 0.07 * r, fill=PINK)
    else:  # hiss: wide open with fangs showing
        box = (hx - 0.3 * r, ny + 0.13 * r, hx + 0.3 * r, ny + 0.5 * r)
        draw.rounded_rectangle(box, radius=0.12 * r, fill=(110, 30, 40), outline=DARK, width=w)
        for side in (-1, 1):
            x = hx + side * 0.19 * r
            draw.polygon(
                [(x - 0.05 * r, box[1]), (x + 0.05 * r, box[1]), (x, box[1] + 0.14 * r)],
                fill=(250, 250, 245),
            )
            draw.polygon(
                [(x - 0.05 * r, box[3]), (x + 0.05 * r, box[3]), (x, box[3] - 0.12 * r)],
                fill=(250, 250, 245),
            )
    whisker = (235, 235, 235) if np.mean(cat.fur) < 110 else (60, 55, 55)
    for side in (-1, 1):
        for k, tilt in enumerate((-0.12, 0.0, 0.12)):
            x0, y0 = hx + side * 0.3 * r, hy + (0.4 + 0.06 * k) * r
            draw.line(
                [(x0, y0), (x0 + side * 0.95 * r, y0 + tilt * r * 2.5)],
                fill=whisker,
                width=max(1, w // 2),
            )


def _fur_layer(size: tuple[int, int], cat: CatAppearance, fig: _Figure, rng) -> Image.Image:
    """Fur colour with the cat's pattern, to be cut out by the silhouette."""
    fur = Image.new("RGB", size, cat.fur)
    draw = ImageDraw.Draw(fur)
    u = fig.u
    if cat.pattern == "tabby":
        # Wavy vertical stripes across the whole layer: once masked they read as tabby bands.
        phase = float(rng.uniform(0, 2 * np.pi))
        ys = np.linspace(0, size[1], 40)
        for x0 in np.arange(float(rng.uniform(0, 0.6 * u)), size[0], 0.6 * u):
            xs = x0 + 0.15 * u * np.sin(ys / u * 1.3 + phase)
            draw.line(
                list(zip(xs.tolist(), ys.tolist(), strict=True)),
                fill=cat.accent,
                width=max(1, int(0.17 * u)),
            )
    elif cat.pattern == "bicolor":
        white = (245, 243, 238)
        cx, cy, rx, ry = fig.chest
        _ellipse(draw, cx, cy, rx, ry, fill=white)
        for x, y in fig.paws:
            _ellipse(draw, x, y, 0.32 * u, 0.35 * u, fill=white)
        hx, hy, r = fig.head
        _ellipse(draw, hx, hy + 0.45 * r, 0.45 * r, 0.4 * r, fill=white)
    return fur


def _max_filter(mask: Image.Image, size: int) -> Image.Image:
    """``mask.filter(ImageFilter.MaxFilter(size))``, pixel for pixel (edges replicated),
    as two 1-D passes in numpy: 2 * size maxima per pixel instead of PIL's size**2 rank
    search (0.6 vs 5-15 ms a cat; it was a tenth of the demo data's time)."""
    pixels = np.asarray(mask)
    height, width = pixels.shape
    padded = np.pad(pixels, size // 2, mode="edge")
    rows = padded[:, :width].copy()
    for shift in range(1, size):
        np.maximum(rows, padded[:, shift : shift + width], out=rows)
    out = rows[:height].copy()
    for shift in range(1, size):
        np.maximum(out, rows[shift : shift + height], out=out)
    return Image.fromarray(out, "L")


def _draw_cat_layer(rng: np.random.Generator, pose: Pose, cat: CatAppearance, u: float):
    """Render the cat alone on a transparent RGBA layer, facing right, feet on the layer's floor."""
    w, h = int(15 * u), int(11 * u)
    gy, cx = 10.5 * u, 7.0 * u
    mask = Image.new("L", (w, h), 0)
    mdraw = ImageDraw.Draw(mask)
    fig = _body_shapes(mdraw, rng, pose.posture, cat, u, cx, gy)
    tail = _draw_tail(mdraw, rng, pose.tail, fig, cat.tail_length)
    ears = _ear_triangles(pose.ears, fig.head, cat.ear_size)
    for tri in ears:
        mdraw.polygon(tri, fill=255)
    fur = _fur_layer((w, h), cat, fig, rng)
    # A dark outline around the whole silhouette (not around each overlapping part) keeps the
    # cat readable against any background, like a cartoon's ink line.
    k = max(3, int(0.09 * u) | 1)
    outline = _max_filter(mask, k)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    layer.paste(_shade(cat.fur, 0.35) + (255,), (0, 0, w, h), outline)
    layer.paste(fur, (0, 0), mask)
    draw = ImageDraw.Draw(layer)
    inner_factor = {"upright": 0.55, "forward": 0.68, "sideways": 0.45, "flattened": 0.3}
    for tri in ears:
        draw.polygon(_shrink(tri, inner_factor[pose.ears]), fill=PINK)
    _draw_eyes(draw, pose.eyes, fig.head, cat)
    _draw_mouth(draw, pose.mouth, fig.head, cat)
    if pose.tail == "lashing":
        # Motion marks beside the tail tip: a still picture's way of showing a swishing tail.
        tx, ty = tail[-1]
        for k2 in range(3):
            rad = (0.5 + 0.25 * k2) * u
            draw.arc(
                (tx - rad, ty - rad, tx + rad, ty + rad),
                200,
                250,
                fill=(70, 70, 70),
                width=max(1, int(0.06 * u)),
            )
    return layer


def _background(rng: np.random.Generator, size: int, floor_y: float) -> Image.Image:
    """A plain, gradient or wall-and-floor background with a few simple objects."""
    # Muted, room-like colours: a grey level plus a moderate tint.
    top = np.clip(rng.uniform(95, 235) + rng.uniform(-1, 1, 3) * rng.uniform(5, 55), 30, 255)
    bottom = np.clip(top + rng.normal(0, 30, 3), 30, 255)
    kind = int(rng.integers(3))
    ys = np.linspace(0.0, 1.0, size)[:, None, None]
    if kind == 0:
        arr = np.broadcast_to(top, (size, size, 3)).copy()
    elif kind == 1:
        arr = np.broadcast_to(top * (1 - ys) + bottom * ys, (size, size, 3)).copy()
    else:
        floor = np.clip(top * rng.uniform(0.45, 0.8) + rng.normal(0, 15, 3), 20, 255)
        arr = np.where(np.arange(size)[:, None, None] < floor_y, top, floor)
        arr = np.broadcast_to(arr, (size, size, 3)).copy()
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):
        _draw_object(draw, rng, size, floor_y)
    return img


def _draw_object(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, floor_y: float):
    """One simple household object: ball, box, plant, window or bowl."""
    kind = ("ball", "box", "plant", "window", "bowl")[int(rng.integers(5))]
    color = _rgb(rng.uniform(30, 230, 3))
    x = float(rng.uniform(0.05, 0.95)) * size
    s = float(rng.uniform(0.06, 0.16)) * size
    y = min(floor_y + float(rng.uniform(-0.02, 0.08)) * size, size - 2)
    if kind == "ball":
        _ellipse(draw, x, y - s / 2, s / 2, s / 2, fill=color, outline=DARK)
        draw.arc((x - s / 2, y - s, x + s / 2, y), 200, 340, fill=(245, 245, 245), width=3)
    elif kind == "box":
        draw.rectangle(
            (x - s, y - 1.4 * s, x + s, y), fill=(180, 140, 90), outline=(90, 60, 30), width=3
        )
        draw.line([(x - s, y - 1.0 * s), (x + s, y - 1.0 * s)], fill=(120, 90, 50), width=3)
    elif kind == "plant":
        draw.polygon(
            [(x - 0.6 * s, y - s), (x + 0.6 * s, y - s), (x + 0.4 * s, y), (x - 0.4 * s, y)],
            fill=(170, 90, 60),
        )
        for k in range(5):
            ang = math.radians(-150 + 30 * k)
            _ellipse(
                draw,
                x + 0.8 * s * math.cos(ang),
                y - s + 0.9 * s * math.sin(ang),
                0.35 * s,
                0.2 * s,
                fill=(60, 140 + 15 * k, 60),
            )
    elif kind == "window":
        wy = float(rng.uniform(0.08, 0.3)) * size
        draw.rectangle(
            (x - 1.2 * s, wy, x + 1.2 * s, wy + 1.6 * s),
            fill=(185, 220, 245),
            outline=(245, 245, 245),
            width=6,
        )
        draw.line([(x, wy), (x, wy + 1.6 * s)], fill=(245, 245, 245), width=5)
        draw.line(
            [(x - 1.2 * s, wy + 0.8 * s), (x + 1.2 * s, wy + 0.8 * s)],
            fill=(245, 245, 245),
            width=5,
        )
    else:
        draw.chord((x - s, y - 0.9 * s, x + s, y + 0.3 * s), 0, 180, fill=color, outline=DARK)
        _ellipse(draw, x, y - 0.3 * s, s, 0.15 * s, fill=(120, 80, 50))


def render_cat(rng: np.random.Generator, pose: Pose, cat: CatAppearance, size: int) -> Image.Image:
    """Draw a cat with the given cues in a random scene; returns a ``size`` x ``size`` RGB image."""
    # Draw large and downsample: PIL's shapes are not antialiased, and small faces would
    # degenerate (a 16-pixel image still gets a properly drawn cat, just scaled down).
    big = max(2 * size, 320)
    u = big / 12.5 * cat.body_size * float(rng.uniform(0.92, 1.08))
    layer = _draw_cat_layer(rng, pose, cat, u)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    layer = layer.crop(layer.getbbox())
    fit = min(1.0, 0.95 * big / layer.width, 0.9 * big / layer.height)
    if fit < 1.0:
        layer = layer.resize((max(1, int(layer.width * fit)), max(1, int(layer.height * fit))))
    x = int(rng.uniform(0, max(1, big - layer.width)))
    ground = rng.uniform(max(layer.height + 0.02 * big, 0.7 * big), 0.98 * big)
    floor_y = ground - float(rng.uniform(0.04, 0.2)) * big
    img = _background(rng, big, floor_y)
    img.paste(layer, (x, int(ground) - layer.height), layer)
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * float(rng.uniform(0.85, 1.15)) + float(rng.uniform(-15, 15))  # exposure
    arr += rng.normal(0.0, float(rng.uniform(2.0, 9.0)), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def draw_cat(rng: np.random.Generator, label: str, cat: CatAppearance, size: int) -> Image.Image:
    """Draw ``cat`` showing the emotion ``label``: cues drawn from the label's tables, random scene."""
    return render_cat(rng, sample_pose(rng, label), cat, size)


# ----------------------------------------------------------------------------------------------
# Sound
# ----------------------------------------------------------------------------------------------


def _envelope(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack, flat sustain, cosine release; ``n`` samples."""
    env = np.ones(n)
    a = min(n, max(1, int(attack * sr)))
    r = min(n - a, max(1, int(release * sr)))
    env[:a] = np.linspace(0.0, 1.0, a)
    if r > 0:
        env[n - r :] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, r)))
    return env


def _harmonic(
    f0: np.ndarray,
    sr: int,
    n_harm: int,
    formant: np.ndarray | float,
    bw: float,
    rolloff: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sum of harmonics of a time-varying fundamental, weighted by a moving formant bump."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    k = np.arange(1, n_harm + 1)[:, None]
    freqs = k * f0[None, :]
    weight = k**-rolloff * (0.15 + np.exp(-(((freqs - formant) / bw) ** 2)))
    # Fade harmonics out below Nyquist (no aliasing) and above ~8 kHz (cats have little energy
    # there); a soft fade, because a harmonic switching off abruptly clicks.
    top = min(0.45 * sr, 8000.0)
    weight = weight * np.clip((top - freqs) / 1500.0, 0.0, 1.0)
    offsets = rng.uniform(0, 2 * np.pi, (n_harm, 1))
    return (weight * np.sin(k * phase[None, :] + offsets)).sum(axis=0)


def _colored_noise(
    rng: np.random.Generator,
    n: int,
    sr: int,
    exponent: float,
    band: tuple[float, float] = (0.0, 1e9),
) -> np.ndarray:
    """Noise with power ~ 1/f**exponent, limited to ``band`` (Hz) with soft edges; unit RMS."""
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    shape = 1.0 / np.maximum(f, 20.0) ** (exponent / 2)
    lo, hi = band
    shape *= 1 / (1 + np.exp(-(f - lo) / max(lo * 0.15, 1.0)))
    shape *= 1 / (1 + np.exp((f - hi) / max(hi * 0.1, 1.0)))
    out = np.fft.irfft(spec * shape, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _meow(rng, n: int, sr: int, strained: bool = False) -> np.ndarray:
    """Harmonic tone whose pitch rises then falls, with a vowel-like moving formant ('mi-aa-ow')."""
    x = np.linspace(0.0, 1.0, n) ** float(rng.uniform(0.7, 1.3))
    if strained:  # lower, flatter and unsteady: a pained meow
        base, peak = rng.uniform(330, 450), rng.uniform(480, 600)
    else:
        base, peak = rng.uniform(480, 620), rng.uniform(720, 900)
    f0 = base + (peak - base) * np.sin(np.pi * x) ** 1.5
    wobble = 0.04 if strained else 0.01
    f0 *= 1 + wobble * np.sin(2 * np.pi * rng.uniform(5, 9) * np.arange(n) / sr)
    formant = 900 + rng.uniform(900, 1500) * np.sin(np.pi * x)
    y = _harmonic(f0, sr, 12, formant, 700.0, 0.9, rng)
    if strained:
        y += 0.3 * _colored_noise(rng, n, sr, 0.5, (300, 4000)) * np.std(y)
    return y * _envelope(n, sr, 0.04, 0.15)


def _purr(rng, n: int, sr: int) -> np.ndarray:
    """Low rumble pulsed ~25 times a second, alternating louder exhale and softer inhale."""
    t = np.arange(n) / sr
    rate = rng.uniform(21, 29)
    rate_t = rate * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t))
    pulses = (0.5 + 0.5 * np.cos(2 * np.pi * np.cumsum(rate_t) / sr)) ** 2.5
    rumble = _colored_noise(rng, n, sr, 1.0, (40, 300))
    rumble += 0.5 * _harmonic(rate_t * 4, sr, 8, 150.0, 150.0, 1.0, rng)
    # Smooth switch between exhale and inhale: a hard step would click.
    breath = 0.65 + 0.35 * (0.5 + 0.5 * np.tanh(5 * np.sin(2 * np.pi * t / rng.uniform(1.6, 2.4))))
    return rumble * pulses * breath * _envelope(n, sr, 0.2, 0.3)


def _hiss(rng, n: int, sr: int) -> np.ndarray:
    """Broadband noise high-passed above ~2-3 kHz: air forced through bared teeth."""
    lo = rng.uniform(2000, 3200)
    y = _colored_noise(rng, n, sr, 0.0, (lo, min(0.45 * sr, rng.uniform(8000, 11000))))
    return y * _envelope(n, sr, 0.01, 0.1) * np.linspace(1.0, rng.uniform(0.5, 0.9), n)


def _growl(rng, n: int, sr: int) -> np.ndarray:
    """Low (~100-200 Hz) unsteady harmonic tone, rough from fast amplitude modulation."""
    t = np.arange(n) / sr
    walk = np.cumsum(rng.normal(0, 1, n // 200 + 2))
    walk = np.interp(np.arange(n), np.arange(len(walk)) * 200, walk / (np.abs(walk).max() + 1e-9))
    f0 = rng.uniform(100, 200) * (1 + 0.08 * walk)
    y = _harmonic(f0, sr, 20, rng.uniform(400, 800), 500.0, 0.7, rng)
    y += 0.4 * _harmonic(f0 / 2, sr, 6, 300.0, 300.0, 1.0, rng)  # subharmonic: the rasp
    y += 0.3 * np.std(y) * _colored_noise(rng, n, sr, 1.0, (80, 1500))
    am = 1 - 0.5 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(15, 30) * t))
    return y * am * _envelope(n, sr, 0.08, 0.2)


def _trill(rng, n: int, sr: int) -> np.ndarray:
    """Two to four short, quickly rising chirps with a rolling 'rrr' flutter."""
    y = np.zeros(n)
    pos = 0
    for _ in range(int(rng.integers(2, 5))):
        m = int(rng.uniform(0.07, 0.14) * sr)
        if pos + m > n:
            break
        x = np.linspace(0, 1, m)
        f0 = rng.uniform(350, 500) + rng.uniform(300, 500) * x**0.7
        chirp = _harmonic(f0, sr, 5, 1200.0, 900.0, 1.0, rng)
        roll = 1 - 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(25, 40) * x * m / sr))
        y[pos : pos + m] = chirp * roll * _envelope(m, sr, 0.01, 0.03)
        pos += m + int(rng.uniform(0.04, 0.1) * sr)
    return y


def _yowl(rng, n: int, sr: int) -> np.ndarray:
    """Long, loud meow that climbs from low to high and wavers."""
    t = np.arange(n) / sr
    x = np.linspace(0.0, 1.0, n)
    lo, hi = rng.uniform(250, 400), rng.uniform(650, 900)
    f0 = lo + (hi - lo) * np.clip(x * 1.6, 0, 1) ** 0.8 * (1 - 0.25 * np.clip(x - 0.7, 0, 1) / 0.3)
    f0 *= 1 + rng.uniform(0.05, 0.1) * np.sin(2 * np.pi * rng.uniform(4, 8) * t)
    formant = 800 + 900 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 2.5) * t))
    return _harmonic(f0, sr, 14, formant, 800.0, 0.4, rng) * _envelope(n, sr, 0.15, 0.3)


_DURATIONS: dict[str, tuple[float, float]] = {
    "meow": (0.45, 1.1),
    "purr": (1.2, 2.5),
    "hiss": (0.4, 1.4),
    "growl": (0.8, 2.0),
    "trill": (0.5, 0.8),
    "yowl": (1.2, 2.3),
}
_LOUDNESS: dict[str, tuple[float, float]] = {
    "meow": (0.35, 0.8),
    "purr": (0.25, 0.6),
    "hiss": (0.4, 0.85),
    "growl": (0.35, 0.75),
    "trill": (0.3, 0.7),
    "yowl": (0.6, 0.95),
}


def _synth(
    rng: np.random.Generator, kind: str, seconds: float, sample_rate: int, strained: bool = False
) -> np.ndarray:
    """Synthesise one clip; ``strained`` makes a meow low and unsteady (the in-pain variant)."""
    if kind not in SOUND_KINDS:
        raise ValueError(f"unknown vocalization kind {kind!r}; expected one of {SOUND_KINDS}")
    n = max(1, int(round(seconds * sample_rate)))
    # Room tone behind every clip: pinkish, so it hums rather than hisses.
    quiet = kind == "quiet"
    level = rng.uniform(0.008, 0.03) if quiet else rng.uniform(0.002, 0.012)
    out = level * _colored_noise(rng, n, sample_rate, 1.0, (30, 8000))
    if not quiet:
        lo, hi = _DURATIONS[kind]
        m = min(n, int(rng.uniform(lo, hi) * sample_rate * (1.3 if strained else 1.0)))
        make = {
            "meow": lambda: _meow(rng, m, sample_rate, strained),
            "purr": lambda: _purr(rng, m, sample_rate),
            "hiss": lambda: _hiss(rng, m, sample_rate),
            "growl": lambda: _growl(rng, m, sample_rate),
            "trill": lambda: _trill(rng, m, sample_rate),
            "yowl": lambda: _yowl(rng, m, sample_rate),
        }
        voice = make[kind]()
        voice = voice / (np.abs(voice).max() + 1e-9) * rng.uniform(*_LOUDNESS[kind])
        start = int(rng.integers(0, n - m + 1))
        out[start : start + m] += voice
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def synth_vocalization(
    rng: np.random.Generator, kind: str, seconds: float, sample_rate: int
) -> np.ndarray:
    """A ``seconds``-long mono clip of a cat sound of ``kind`` (see SOUND_KINDS), float32 in [-1, 1].

    The sound starts at a random time within the clip over low background noise; pitch, duration
    and loudness are random within ranges typical for the kind.
    """
    return _synth(rng, kind, seconds, sample_rate)


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def _arousal(rng: np.random.Generator, profile: str, vocalization: str | None) -> str:
    """Arousal from the label, nudged by a loud sound and by some random jitter."""
    levels = AROUSAL_LEVELS
    i = levels.index(label_arousal(profile))
    if vocalization in ("yowl", "growl", "hiss") and i == 0:
        i = 1
    if rng.random() < 0.15:
        i += 1 if rng.random() < 0.5 else -1
    return levels[min(len(levels) - 1, max(0, i))]


def _alternatives(rng, label: str, profile: str, labels: Sequence[str], confidence_cents: int):
    """One or two other labels with probabilities that leave the total at or below 1."""
    others = [x for x in labels if x != label]
    if not others:
        return []
    preferred = [x for x in CONFUSABLE.get(profile, ()) if x in others]
    pool = preferred + [x for x in others if x not in preferred]
    weights = np.array([3.0 if x in preferred else 1.0 for x in pool])
    count = min(len(pool), 1 + int(rng.random() < 0.5))
    chosen = rng.choice(len(pool), size=count, replace=False, p=weights / weights.sum())
    # Work in whole cents so the sum can never creep above 1 through float rounding.
    left = 100 - confidence_cents - 1
    alts = []
    for idx in chosen:
        cents = max(1, int(left * rng.uniform(0.35, 0.7)))
        if cents > left:
            break
        alts.append({"emotion": pool[int(idx)], "p": cents / 100})
        left -= cents
    return sorted(alts, key=lambda a: -a["p"])  # most likely alternative first


def _summary(rng, label: str, profile: str, evidence: dict) -> str:
    """A short sentence naming the emotion, with one or two of the cues actually present."""
    openings = SUMMARY_OPENINGS.get(profile) if label == profile else None
    opening = (
        openings[int(rng.integers(len(openings)))]
        if openings
        else f"The cat seems {label.replace('_', ' ')}"
    )
    clauses = []
    sound = evidence.get("vocalization")
    if sound in SOUND_PHRASES:
        strained = sound == "meow" and profile == "in_pain"
        clauses.append("meowing in a strained voice" if strained else SOUND_PHRASES[sound])
    for key, phrases in (
        ("posture", POSTURE_PHRASES),
        ("ears", EAR_PHRASES),
        ("tail", TAIL_PHRASES),
        ("eyes", EYE_PHRASES),
    ):
        if evidence.get(key) in phrases:
            clauses.append(phrases[evidence[key]])
    if not clauses:
        return opening + "."
    k = min(len(clauses), int(rng.integers(1, 3)))
    picked = [clauses[int(i)] for i in sorted(rng.choice(len(clauses), size=k, replace=False))]
    return f"{opening}, {' and '.join(picked)}."


def build_report(
    rng: np.random.Generator,
    label: str,
    labels: Sequence[str],
    pose: Pose | None,
    vocalization: str | None,
) -> dict:
    """The validated report for a sample whose drawn cues are ``pose`` and sound ``vocalization``.

    ``pose`` is None for a sample without image, ``vocalization`` None for one without audio.
    """
    profile = cue_profile(label, labels)
    evidence = {
        "ears": pose.ears if pose else None,
        "eyes": pose.eyes if pose else None,
        "tail": pose.tail if pose else None,
        "posture": pose.posture if pose else None,
        "vocalization": vocalization,
    }
    modalities = [m for m, present in (("image", pose), ("audio", vocalization)) if present]
    # Two senses agree more often than one: a plausibly calibrated confidence.
    low, high = (62, 92) if len(modalities) == 2 else (45, 80)
    confidence_cents = int(rng.integers(low, high + 1))
    advice = ADVICE.get(profile) if label == profile else None
    report = Report(
        emotion=label,
        confidence=confidence_cents / 100,
        alternatives=_alternatives(rng, label, profile, labels, confidence_cents),
        arousal=_arousal(rng, profile, vocalization),
        evidence=evidence,
        summary=_summary(rng, label, profile, evidence),
        advice=advice[int(rng.integers(len(advice)))] if advice else GENERIC_ADVICE,
        welfare_alert=label in WELFARE_LABELS,
        modalities=modalities,
    )
    return report.model_dump(mode="json")


def _instruction(rng: np.random.Generator, has_image: bool, has_audio: bool) -> str:
    """One of several phrasings of the question, some specific to the modality present."""
    options = list(INSTRUCTIONS_ANY)
    if has_image and not has_audio:
        options += INSTRUCTIONS_IMAGE
    if has_audio and not has_image:
        options += INSTRUCTIONS_AUDIO
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------------
# Dataset plan: labels, subjects, splits, missing modalities
# ----------------------------------------------------------------------------------------------


def _largest_remainder(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (each >= minimum if it can)."""
    active = weights > 0
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    if minimum and total >= minimum * active.sum():
        for i in np.flatnonzero(active & (counts < minimum)):
            while counts[i] < minimum:
                counts[int(np.argmax(counts))] -= 1
                counts[i] += 1
    return counts


def _split_label_counts(label_counts: list[int], weights: np.ndarray) -> np.ndarray:
    """Per label, how many samples go to each split.

    Rounding per label would always favour the same split; carrying the running shortfall from
    label to label keeps split sizes close to the ratios. Each split with subjects gets at least
    one sample of every label that has enough samples.
    """
    active = weights > 0
    expected = np.zeros(len(weights))
    assigned = np.zeros(len(weights), dtype=int)
    rows = []
    for count in label_counts:
        exact = count * weights / weights.sum()
        base = np.floor(exact).astype(int)
        deficit = (expected + exact) - (assigned + base)
        deficit[~active] = -np.inf
        order = np.argsort(-deficit, kind="stable")
        base[order[: count - base.sum()]] += 1
        if count >= active.sum():
            for i in np.flatnonzero(active & (base == 0)):
                base[int(np.argmax(base))] -= 1
                base[i] += 1
        expected += exact
        assigned += base
        rows.append(base)
    return np.array(rows)


def _plan(
    rng: np.random.Generator,
    n: int,
    labels: Sequence[str],
    n_subjects: int,
    split_ratios: Sequence[float],
) -> list[dict]:
    """Decide label, subject, split and modalities of every sample, in output (id) order."""
    width = max(2, len(str(n_subjects)))
    subjects = [f"cat-{k + 1:0{width}d}" for k in range(n_subjects)]
    ratios = np.asarray(split_ratios, dtype=float)
    subject_counts = _largest_remainder(n_subjects, ratios, minimum=1)
    shuffled = [subjects[int(i)] for i in rng.permutation(n_subjects)]
    bounds = np.concatenate([[0], np.cumsum(subject_counts)])
    split_subjects = [shuffled[bounds[i] : bounds[i + 1]] for i in range(len(SPLITS))]
    # Balanced labels: round robin over the label list.
    label_counts = [len(range(i, n, len(labels))) for i in range(len(labels))]
    weights = np.where(subject_counts > 0, ratios, 0.0)
    table = _split_label_counts(label_counts, weights)
    samples = []
    for s, split in enumerate(SPLITS):
        split_labels = [lab for lab, row in zip(labels, table, strict=True) for _ in range(row[s])]
        split_labels = [split_labels[int(i)] for i in rng.permutation(len(split_labels))]
        cats = split_subjects[s]
        # Round robin over the split's cats: each cat shows several emotions, all in one split.
        samples += [
            {"label": lab, "subject_id": cats[j % len(cats)], "split": split}
            for j, lab in enumerate(split_labels)
        ]
    samples = [samples[int(i)] for i in rng.permutation(len(samples))]
    k = int(0.1 * n + 0.5)
    missing = rng.permutation(n)
    for sample in samples:
        sample["has_image"] = True
        sample["has_audio"] = True
    for i in missing[:k]:
        samples[int(i)]["has_audio"] = False  # image only
    for i in missing[k : 2 * k]:
        samples[int(i)]["has_image"] = False  # audio only
    return samples


def _check_args(
    n: int,
    labels: Sequence[str],
    split_ratios: Sequence[float],
    n_subjects_per_label: int,
    image_size: int,
    audio_seconds: float,
    sample_rate: int,
) -> None:
    """Refuse arguments that would produce an empty or inconsistent data set."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labels!r}")
    if len(split_ratios) != len(SPLITS) or min(split_ratios) < 0 or sum(split_ratios) <= 0:
        raise ValueError(f"split_ratios must be 3 non-negative numbers, got {split_ratios!r}")
    if n_subjects_per_label < 1:
        raise ValueError(f"n_subjects_per_label must be at least 1, got {n_subjects_per_label}")
    if image_size < 16 or audio_seconds <= 0 or sample_rate < 8000:
        raise ValueError("image_size >= 16, audio_seconds > 0 and sample_rate >= 8000 are needed")


def _make_sample(
    ss: np.random.SeedSequence,
    index: int,
    width: int,
    plan: dict,
    cat: CatAppearance,
    labels: Sequence[str],
    out: Path,
    image_size: int,
    audio_seconds: float,
    sample_rate: int,
) -> dict:
    """Write one sample's media files and return its JSONL record."""
    # Separate streams per part: dropping the audio of a sample leaves its picture unchanged.
    img_rng, aud_rng, txt_rng = (np.random.default_rng(s) for s in ss.spawn(3))
    label, stem = plan["label"], f"{index + 1:0{width}d}"
    pose = image_rel = kind = audio_rel = None
    if plan["has_image"]:
        pose = sample_pose(img_rng, label)
        image_rel = f"img/{stem}.png"
        # Fast zlib level: 2.5x quicker to write than the default 6, files ~10 % larger.
        render_cat(img_rng, pose, cat, image_size).save(
            out / image_rel, format="PNG", compress_level=1
        )
    if plan["has_audio"]:
        kind = sample_sound_kind(aud_rng, label)
        strained = kind == "meow" and cue_profile(label, labels) == "in_pain"
        audio_rel = f"aud/{stem}.wav"
        wav = _synth(aud_rng, kind, audio_seconds, sample_rate, strained)
        sf.write(out / audio_rel, wav, sample_rate, subtype="PCM_16", format="WAV")
    return {
        "id": f"s-{stem}",
        "image": image_rel,
        "audio": audio_rel,
        "video": None,
        "instruction": _instruction(txt_rng, pose is not None, kind is not None),
        "response": build_report(txt_rng, label, labels, pose, kind),
        "label": label,
        "subject_id": plan["subject_id"],
    }


def _make_sample_job(job: tuple) -> dict:
    return _make_sample(*job)


def _make_samples(jobs: list[tuple], workers: int | None) -> list[dict]:
    """Each job through :func:`_make_sample`, in order; in ``workers`` processes (spawned,
    not forked: the caller may hold torch's thread pools) when that is worth it."""
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 64:
        return [_make_sample(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_make_sample_job, jobs, chunksize=16))


def _write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line, UTF-8, '\\n' line ends (byte-identical on every platform)."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def generate_demo_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
    image_size: int = 224,
    audio_seconds: float = 2.5,
    sample_rate: int = 22050,
    n_subjects_per_label: int = 4,
    split_ratios=(0.7, 0.15, 0.15),
    workers: int | None = None,
) -> dict:
    """Write a demo data set of ``n`` labelled cat samples into ``out_dir``.

    Writes out_dir/{img/NNNN.png, aud/NNNN.wav, train.jsonl, val.jsonl, test.jsonl, all.jsonl}
    (JSONL as in DESIGN.md, paths relative to ``out_dir``). Labels are balanced; there are
    ``n_subjects_per_label * len(labels)`` synthetic cats, each with a fixed look and shown with
    several emotions; splits are grouped by cat, and with 10 or more samples per label every
    label appears in every split. About 10% of samples are image-only and 10% audio-only.
    The same arguments give byte-identical files, whatever ``workers`` (processes drawing
    samples in parallel; None: one per CPU core, at most 4), since every sample draws from
    its own seed.

    Returns {"n", "splits": {split: count}, "labels": {label: count}, "subjects": number of cats
    that appear, "out_dir"}.
    """
    labels = list(labels)
    _check_args(
        n, labels, split_ratios, n_subjects_per_label, image_size, audio_seconds, sample_rate
    )
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "aud").mkdir(parents=True, exist_ok=True)
    plan_ss, look_ss, sample_ss = np.random.SeedSequence(seed).spawn(3)
    n_subjects = n_subjects_per_label * len(labels)
    plan = _plan(np.random.default_rng(plan_ss), n, labels, n_subjects, split_ratios)
    width = max(2, len(str(n_subjects)))
    looks = {
        f"cat-{k + 1:0{width}d}": random_appearance(np.random.default_rng(s))
        for k, s in enumerate(look_ss.spawn(n_subjects))
    }
    id_width = max(4, len(str(n)))
    jobs = [
        (ss, i, id_width, p, looks[p["subject_id"]], labels, out)
        + (image_size, audio_seconds, sample_rate)
        for i, (p, ss) in enumerate(zip(plan, sample_ss.spawn(n), strict=True))
    ]
    records = _make_samples(jobs, workers)
    _write_jsonl(out / "all.jsonl", records)
    for split in SPLITS:
        _write_jsonl(
            out / f"{split}.jsonl",
            [r for r, p in zip(records, plan, strict=True) if p["split"] == split],
        )
    return {
        "n": n,
        "splits": {s: sum(p["split"] == s for p in plan) for s in SPLITS},
        "labels": {lab: sum(p["label"] == lab for p in plan) for lab in labels},
        "subjects": len({p["subject_id"] for p in plan}),
        "out_dir": str(out),
    }


# ----------------------------------------------------------------------------------------------
# Looking at the data
# ----------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (older Pillow: its fixed bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def make_contact_sheet(data_dir, out_png, max_items: int = 49) -> Path:
    """Save a grid of the data set's images with each one's label (and posture, ears) below it."""
    data_dir, out_png = Path(data_dir), Path(out_png)
    records = []
    for line in (data_dir / "all.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("image"):
            records.append(rec)
        if len(records) >= max_items:
            break
    if not records:
        raise ValueError(f"no samples with an image in {data_dir / 'all.jsonl'}")
    thumb, caption = 160, 36
    cols = math.ceil(math.sqrt(len(records)))
    rows = math.ceil(len(records) / cols)
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    big, small = _font(14), _font(11)
    for i, rec in enumerate(records):
        x, y = (i % cols) * thumb, (i // cols) * (thumb + caption)
        with Image.open(data_dir / rec["image"]) as im:
            sheet.paste(im.convert("RGB").resize((thumb, thumb)), (x, y))
        draw.text((x + 4, y + thumb + 2), str(rec.get("label")), fill=(0, 0, 0), font=big)
        response = rec.get("response")
        ev = response.get("evidence", {}) if isinstance(response, dict) else {}
        detail = f"{ev.get('posture')}, ears {ev.get('ears')}"
        draw.text((x + 4, y + thumb + 19), detail, fill=(90, 90, 90), font=small)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
