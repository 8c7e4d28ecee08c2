"""Predict latency on this CPU: label scoring vs the full report, fp32 vs int8.

    python benchmarks/predict_latency.py --checkpoint outputs/checkpoints/last.ckpt
    python benchmarks/predict_latency.py --checkpoint last.ckpt --fp32 outputs/demo/bundle \
        --data data/demo/test.jsonl
    python benchmarks/predict_latency.py --fp32 outputs/demo/bundle --int8 outputs/bench/int8 \
        --data data/demo/test.jsonl --json

With ``--checkpoint`` both bundles are exported first (into ``--work``, with reading heads
as `purrsight export` fits them). Each request is
the real cat photo (``skimage.data.chelsea()``) plus a generated 2-second sound, timed
end to end through ``Predictor.predict`` (decoding, encoders, aligner, LLM): p50 and p95
over ``--runs`` calls after one warm-up call. ``--data`` adds label agreement of int8 with
fp32 (label scoring) on that split's first ``--agree`` samples. Sizes come from the int8
bundle's ``purrsight.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purrsight.inference.export import export_bundle
from purrsight.inference.predictor import Predictor
from purrsight.inference.reading_export import fit_reading_for_checkpoint


def cat_photo() -> bytes:
    from PIL import Image
    from skimage.data import chelsea

    buffer = io.BytesIO()
    Image.fromarray(chelsea()).save(buffer, format="PNG")
    return buffer.getvalue()


def meow(seconds: float = 2.0, rate: int = 16000) -> bytes:
    """A rising-then-falling harmonic tone with an envelope: a stand-in for a meow."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 500 + 300 * np.sin(np.pi * t / seconds)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave_ = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * np.sin(np.pi * t / seconds) * 0.3
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((wave_ * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


STAGES = ("decode", "encoders", "aligner", "label_scoring", "generation")
"""Where a call's time goes (``Prediction.timings``): media decoding, the frozen encoders,
the aligner heads, the LLM's label-scoring pass (prompt prefill + every label), and the
report's KV-cached decode loop (its own prefill included)."""


def time_calls(predictor: Predictor, request: dict, mode: str, runs: int) -> dict[str, Any]:
    predictor.predict(**request, mode=mode)  # warm-up: encoders built, caches allocated
    seconds, stages = [], {name: 0.0 for name in STAGES}
    for _ in range(runs):
        t0 = time.perf_counter()
        timings = predictor.predict(**request, mode=mode).timings
        seconds.append(time.perf_counter() - t0)
        for name in STAGES:
            stages[name] += timings.get(name, 0.0)
    total = sum(seconds)
    return {
        "p50_ms": 1000 * statistics.median(seconds),
        "p95_ms": 1000 * percentile(seconds, 95),
        "runs": runs,
        "share": {name: round(v / total, 3) for name, v in stages.items() if v},
    }


def agreement(fp32: Predictor, int8: Predictor, data: Path, n: int) -> dict[str, float]:
    from purrsight.data.manifest import read_manifest

    samples = read_manifest(data, fp32.labels)[:n]
    requests = [{"image": s.image, "audio": s.audio, "video": s.video} for s in samples]
    a = fp32.predict_batch(requests, mode="labels")
    b = int8.predict_batch(requests, mode="labels")

    def top(p):
        return max(p.probabilities, key=p.probabilities.get)

    same = sum(top(x) == top(y) for x, y in zip(a, b, strict=True))
    diff = max(
        abs(x.probabilities[k] - y.probabilities[k])
        for x, y in zip(a, b, strict=True)
        for k in x.probabilities
    )
    return {
        "samples": len(samples),
        "same_label": same,
        "rate": same / len(samples),
        "max_probability_difference": diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="export fp32 + int8 bundles from this .ckpt")
    parser.add_argument("--work", default="outputs/bench", help="where exported bundles go")
    parser.add_argument("--fp32", help="an fp32 bundle (adapter or merged)")
    parser.add_argument("--int8", help="an int8 bundle (purrsight export --quantize int8)")
    parser.add_argument("--runs", type=int, default=10, help="timed label-scoring calls")
    parser.add_argument("--report-runs", type=int, default=3, help="timed full-report calls")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--data", help="a JSONL split for int8 vs fp32 label agreement")
    parser.add_argument("--agree", type=int, default=21, help="samples for the agreement")
    parser.add_argument(
        "--precision",
        choices=("auto", "32"),
        default="auto",
        help="the non-int8 bundle's compute dtype (auto: bf16 where the CPU does it natively)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fp32_dir, int8_dir = args.fp32, args.int8
    if args.checkpoint:
        work = Path(args.work)
        # As `purrsight export` makes them: with the reading heads, which write a report's
        # evidence (an emotion-only LLM, answer_fields [emotion], writes none).
        if not fp32_dir:  # a bundle given on the command line is used as it is
            fp32_dir = str(work / "fp32")
            export_bundle(args.checkpoint, fp32_dir)
            fit_reading_for_checkpoint(Path(fp32_dir), args.checkpoint)
        if not int8_dir:
            int8_dir = str(work / "int8")
            export_bundle(args.checkpoint, int8_dir, quantize="int8")
            fit_reading_for_checkpoint(Path(int8_dir), args.checkpoint)
    if not fp32_dir or not int8_dir:
        parser.error("give --checkpoint, or both --fp32 and --int8")
    predictors = {
        "fp32": Predictor.from_bundle(fp32_dir, precision=args.precision),
        "int8": Predictor.from_bundle(int8_dir),
    }
    compute = str(next(predictors["fp32"].bundle.model.llm.parameters()).dtype)
    request = {"image": cat_photo(), "audio": meow()}
    rows = []
    for path, mode, runs in (
        ("label scoring", "labels", args.runs),
        ("full report", "report", args.report_runs),
    ):
        for precision, predictor in predictors.items():
            rows.append(
                {"path": path, "precision": precision, **time_calls(predictor, request, mode, runs)}
            )
    int8_info = predictors["int8"].bundle.info
    result = {
        "cpu_threads": torch.get_num_threads(),
        "fp32_bundle_computes_in": compute.removeprefix("torch."),
        "llm": int8_info["llm"]["name"],
        "latency": rows,
        "sizes_mb": int8_info["quantization"],
    }
    if args.data:
        result["int8_agreement"] = agreement(
            predictors["fp32"], predictors["int8"], Path(args.data), args.agree
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"torch threads: {result['cpu_threads']}, LLM: {result['llm']}, the fp32 bundle "
        f"computes in {result['fp32_bundle_computes_in']} (--precision {args.precision})"
    )
    print(f"{'path':15s} {'weights':8s} {'p50 ms':>9s} {'p95 ms':>9s} {'runs':>5s}  share of time")
    for row in rows:
        shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in row["share"].items())
        print(
            f"{row['path']:15s} {row['precision']:8s} {row['p50_ms']:9.0f} "
            f"{row['p95_ms']:9.0f} {row['runs']:5d}  {shares}"
        )
    sizes = result["sizes_mb"]
    print(f"LLM weights: fp32 {sizes['llm_fp32_mb']:.1f} MB, int8 {sizes['llm_int8_mb']:.1f} MB")
    if "int8_agreement" in result:
        agree = result["int8_agreement"]
        print(
            f"int8 vs fp32 label agreement: {agree['same_label']}/{agree['samples']} "
            f"({100 * agree['rate']:.0f} %), max probability difference "
            f"{agree['max_probability_difference']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
