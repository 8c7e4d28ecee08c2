"""Label scoring speed: this checkout's scoring against another commit's, in one run.

    python benchmarks/label_scoring.py --bundle outputs/demo/bundle --data data/demo/test.jsonl \
        --against 71b2399 [--rounds 2] [--json]

``--against`` names a commit whose ``src/purrsight/inference/scoring.py`` is loaded beside
this checkout's (read with ``git show``, so nothing is checked out); the predictor's
``label_probabilities`` (the arousal x label tree over every sample of ``--data``) runs
with each in turn, ``--rounds`` times, alternating, on one loaded bundle with features
prepared once. Prints the seconds of each round, the median ratio, and how far the two
sets of label probabilities differ.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCORING = "src/purrsight/inference/scoring.py"


def load_scoring_at(commit: str, workdir: Path):
    """The scoring module as it was at ``commit``."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:{SCORING}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = workdir / "scoring_at_commit.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("scoring_at_commit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="outputs/demo/bundle")
    parser.add_argument("--data", default="data/demo/test.jsonl")
    parser.add_argument("--against", required=True, help="commit with the scoring to compare")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    import purrsight.inference.predictor as predictor_module
    import purrsight.inference.scoring as current
    from purrsight.data.manifest import read_manifest

    predictor = predictor_module.Predictor.from_bundle(args.bundle)
    prepared = []
    for sample in read_manifest(args.data, predictor.labels):
        request = predictor.prepare(image=sample.image, audio=sample.audio, video=sample.video)
        request.instruction = sample.instruction
        prepared.append(request)
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"current": current, args.against: load_scoring_at(args.against, Path(tmp))}
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        probabilities: dict[str, torch.Tensor] = {}
        for _ in range(args.rounds):
            for name, module in variants.items():
                predictor_module.score_options = module.score_options
                started = time.perf_counter()
                probabilities[name] = predictor.label_probabilities(prepared)
                seconds[name].append(time.perf_counter() - started)
    predictor_module.score_options = current.score_options
    current_p, other_p = probabilities["current"], probabilities[args.against]
    result = {
        "samples": len(prepared),
        "seconds": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
        "speedup": round(
            statistics.median(seconds[args.against]) / statistics.median(seconds["current"]), 2
        ),
        "max_abs_probability_difference": float((current_p - other_p).abs().max()),
        "same_top_label": float((current_p.argmax(1) == other_p.argmax(1)).float().mean()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
