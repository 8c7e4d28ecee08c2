"""Cold start of ``purrsight predict``: a fresh process per answer, as a user runs it.

    python benchmarks/cold_start.py --model outputs/demo/bundle
    python benchmarks/cold_start.py --model outputs/demo/bundle --runs 5 --report-runs 3 \
        --baseline /tmp/old-bundle      # the same, beside a bundle without a ready LLM

Each run starts the ``purrsight`` command (the console script beside this Python) with
one photo and 2 s of sound (``skimage``'s cat photo as WebP, a synthetic meow as Ogg
Vorbis, written once into a temporary folder) and ``--details``, and times it from the
start of the process to its exit. The command's ``startup`` section says where its own
time went, in seconds since the process started: the imports (Python, torch, the CLI and
the predictor's modules), the bundle's load, the first call (decoding, the encoders built
on first use, the model), and the rest up to the exit (printing, interpreter exit). The
label path (``--mode labels``) and the report path (``--mode report``: generation too) are
timed in turns (label, report, label, …) so that a change in the machine's load shows in
both; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("imports", "bundle_load", "first_call", "exit")


def write_inputs(folder: Path, seconds: float = 2.0) -> tuple[Path, Path]:
    """(photo.webp, meow.ogg): a real cat photo and a 2 s harmonic chirp."""
    import soundfile as sf
    from PIL import Image

    try:
        from skimage.data import chelsea

        picture = Image.fromarray(chelsea())
    except ImportError:  # scikit-image is a dev dependency
        rng = np.random.default_rng(0)
        picture = Image.fromarray(rng.integers(0, 255, (300, 451, 3), dtype=np.uint8))
    photo = folder / "photo.webp"
    picture.save(photo, format="WEBP", quality=90)
    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    pitch = 500 + 300 * np.sin(np.pi * t / seconds)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    sound = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * np.sin(np.pi * t / seconds) * 0.3
    meow = folder / "meow.ogg"
    sf.write(meow, sound.astype(np.float32), rate, format="OGG", subtype="VORBIS")
    return photo, meow


def command() -> list[str]:
    """The installed ``purrsight`` script beside this interpreter (``-m`` otherwise)."""
    script = Path(sys.executable).with_name("purrsight")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "purrsight.cli"]


def run_once(model: str, photo: Path, meow: Path, mode: str) -> dict[str, float]:
    """One fresh process: wall seconds from its start to its exit, and its stages."""
    argv = [*command(), "predict", "--model", model, "--image", str(photo)]
    argv += ["--audio", str(meow), "--mode", mode, "--details"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    startup = json.loads(done.stdout)["startup"]
    return {
        "wall": wall,
        "to_answer": startup["to_answer"],
        "imports": startup["imports"],
        "bundle_load": startup["bundle_load"],
        "first_call": startup["first_call"],
        "exit": max(0.0, wall - startup["to_answer"]),
        "emotion": json.loads(done.stdout)["report"]["emotion"],
    }


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    median = {k: statistics.median(r[k] for r in runs) for k in ("wall", "to_answer", *STAGES)}
    median["runs"] = len(runs)
    return median


def line(name: str, m: dict[str, float]) -> str:
    shares = ", ".join(
        f"{k.replace('_', ' ')} {m[k]:.2f} s ({100 * m[k] / m['wall']:.0f} %)" for k in STAGES
    )
    return (
        f"{name:22s} median {m['wall']:.2f} s from process start to exit "
        f"({m['to_answer']:.2f} s to the answer; {int(m['runs'])} runs): {shares}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/demo/bundle")
    parser.add_argument("--baseline", help="a second bundle timed the same way, in turns")
    parser.add_argument("--runs", type=int, default=5, help="label-path runs per bundle")
    parser.add_argument("--report-runs", type=int, default=3, help="report-path runs (0: none)")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON too")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="purrsight-cold-"))
    try:
        photo, meow = write_inputs(folder)
        bundles = {"bundle": args.model}
        if args.baseline:
            bundles["baseline"] = args.baseline
        plan = []  # in turns, so that load changes hit every kind alike
        for i in range(max(args.runs, args.report_runs)):
            for name, model in bundles.items():
                if i < args.runs:
                    plan.append((name, model, "labels"))
                if i < args.report_runs:
                    plan.append((name, model, "report"))
        for model in bundles.values():  # warm the page cache: "after installation"
            run_once(model, photo, meow, "labels")
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for name, model, mode in plan:
            results.setdefault((name, mode), []).append(run_once(model, photo, meow, mode))
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; inputs: photo.webp + "
            f"2 s meow.ogg; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        )
        medians = {}
        for (name, mode), runs in results.items():
            medians[f"{name}/{mode}"] = summarize(runs)
            label = f"{name} {'label path' if mode == 'labels' else 'report path'}"
            print(line(label, medians[f"{name}/{mode}"]))
        if args.baseline:
            for mode in ("labels", "report"):
                a, b = medians.get(f"bundle/{mode}"), medians.get(f"baseline/{mode}")
                if a and b:
                    print(f"{mode}: baseline / bundle = {b['wall'] / a['wall']:.2f}x")
        if args.json:
            print(json.dumps(medians, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
