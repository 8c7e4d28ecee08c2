"""Is there a cat, and is the input like the training data? The subject / range check of a
bundle on inputs that are not cats and on the demo's own val and test inputs.

    python benchmarks/subject_check.py --model outputs/demo/bundle [--data data/demo] [--json]

Inputs: scikit-image's real photos (``chelsea`` is a cat; ``astronaut``, ``camera``,
``coffee``, ``rocket`` and the rest are not), synthetic sounds made here (white and pink
noise, pure and swept tones, silence, a chord; English sentences spoken by libespeak-ng,
which the ``espeakng-loader`` package bundles: ``benchmarks/speech.py``) and the demo
split's inputs. Without that package the run says ``NO SPEECH SAMPLES`` (in the table and
the JSON's ``notes``). Each goes through ``predict`` (label path) and is counted by its
verdict: ``cat`` in range, ``cat`` out of range, ``no_cat``, ``unsure``, and whether the
answer still named an emotion. Goals: >= 95 % of the demo inputs answered ``cat`` in range;
>= 95 % of the non-cat inputs ``no_cat``, ``unsure`` or out of range, never a confident
emotion.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

RATE = 22050
SECONDS = 2.0
PHOTOS = {
    "chelsea": True,
    "astronaut": False,
    "camera": False,
    "coffee": False,
    "rocket": False,
    "coins": False,
    "moon": False,
    "horse": False,
    "page": False,
    "text": False,
    "clock": False,
    "brick": False,
    "grass": False,
    "gravel": False,
    "hubble_deep_field": False,
    "immunohistochemistry": False,
    "retina": False,
    "colorwheel": False,
}
"""scikit-image's sample photos, and whether each shows a cat."""
NOTES: list[str] = []
"""What this run could not do (no speech without ``espeakng-loader``)."""


def photos(folder: Path) -> list[tuple[str, Path, bool]]:
    import skimage.data

    out = []
    for name, is_cat in PHOTOS.items():
        pixels = np.asarray(getattr(skimage.data, name)())
        if pixels.dtype != np.uint8:
            pixels = (255 * (pixels.astype(float) / max(pixels.max(), 1))).astype(np.uint8)
        image = Image.fromarray(pixels).convert("RGB")
        path = folder / f"{name}.png"
        image.save(path)
        out.append((name, path, is_cat))
    return out


def sounds(folder: Path) -> list[tuple[str, Path]]:
    """Non-cat sounds of 2 s: noises, tones, a sweep, silence, a chord, and speech."""
    rng = np.random.default_rng(0)
    t = np.arange(int(RATE * SECONDS)) / RATE
    white = rng.normal(0, 0.2, t.size)
    spectrum = np.fft.rfft(rng.normal(0, 1, t.size))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))  # 1/f power
    pink = np.fft.irfft(spectrum, t.size)
    pink *= 0.2 / pink.std()
    sweep = 0.3 * np.sin(2 * np.pi * (200 * t + (4000 - 200) / (2 * SECONDS) * t**2))
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (440.0, 554.4, 659.3))
    made = {
        "white noise": white,
        "pink noise": pink,
        "tone 440 Hz": 0.3 * np.sin(2 * np.pi * 440 * t),
        "tone 1 kHz": 0.3 * np.sin(2 * np.pi * 1000 * t),
        "sweep 200-4000 Hz": sweep,
        "silence": np.zeros_like(t),
        "chord A major": chord,
    }
    out = []
    for name, wave in made.items():
        path = folder / f"{name.replace(' ', '_')}.wav"
        sf.write(path, wave.astype(np.float32), RATE)
        out.append((name, path))
    out += speech_clips(folder)
    return out


def speech_clips(folder: Path) -> list[tuple[str, Path]]:
    """English sentences spoken by libespeak-ng in a few voices and speeds (benchmarks/speech.py).

    libespeak-ng and its data come from the ``espeakng-loader`` package (requirements/dev.txt),
    not a system install. Without it there is no speech, and the run says so (``NOTES``,
    printed with the table and put in the JSON) rather than skipping it silently.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import speech

    try:
        rate, made = speech.clips(SECONDS)
    except speech.SpeechUnavailable as error:
        NOTES.append(f"NO SPEECH SAMPLES: {error}")
        print(NOTES[-1], file=sys.stderr)
        return []
    out = []
    for name, wave in made.items():
        path = folder / f"{name.replace(' ', '_').replace('+', '_')}.wav"
        sf.write(path, wave, rate)
        out.append((name, path))
    return out


def classify(prediction) -> str:
    report = prediction.report
    if report.subject is None:
        return "no check"
    if report.subject == "cat":
        return "cat, in range" if report.in_range else "cat, out of range"
    return report.subject


def run(model: str, data: str | None) -> dict:
    from purrsight.data.manifest import read_manifest
    from purrsight.inference.predictor import Predictor

    predictor = Predictor.from_bundle(model)
    groups: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, path, is_cat in photos(folder):
            p = predictor.predict(image=path, mode="labels")
            group = "photo of a cat" if is_cat else "photo, not a cat"
            groups.setdefault(group, []).append(_row(name, p))
        for name, path in sounds(folder):
            p = predictor.predict(audio=path, mode="labels")
            groups.setdefault("sound, not a cat", []).append(_row(name, p))
    if data:
        for split in ("val", "test"):
            for sample in read_manifest(Path(data) / f"{split}.jsonl", predictor.labels):
                p = predictor.predict(image=sample.image, audio=sample.audio, mode="labels")
                groups.setdefault(f"demo {split}", []).append(_row(sample.id, p))
    return groups


def _row(name: str, prediction) -> dict:
    report = prediction.report
    return {
        "input": name,
        "verdict": classify(prediction),
        "emotion": report.emotion,
        "confidence": report.confidence,
        "reason": report.subject_reason,
    }


def summarise(groups: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for group, rows in groups.items():
        counts = Counter(r["verdict"] for r in rows)
        named = sum(r["emotion"] != "unsure" for r in rows)
        out[group] = {"n": len(rows), "verdicts": dict(counts), "emotion_named": named}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle folder")
    parser.add_argument("--data", default=None, help="demo data folder (val.jsonl, test.jsonl)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    groups = run(args.model, args.data)
    summary = summarise(groups)
    if args.json:
        print(json.dumps({"summary": summary, "inputs": groups, "notes": NOTES}, indent=2))
        return 0
    for group, rows in groups.items():
        if not group.startswith("demo"):
            for r in rows:
                print(
                    f"{group:18s} {r['input']:24s} {r['verdict']:18s} {r['emotion']:10s} {r['reason']}"
                )
    print(f"\n{'group':18s} {'n':>4s}  verdicts (emotion named)")
    for group, s in summary.items():
        print(f"{group:18s} {s['n']:4d}  {s['verdicts']} ({s['emotion_named']})")
    for note in NOTES:
        print(note)
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
