"""The bodies of ``purrsight export | predict | evaluate`` (cli.py only parses arguments).

purrsight export --checkpoint outputs/checkpoints/last.ckpt --out outputs/demo/bundle
purrsight predict --model outputs/demo/bundle --image cat.jpg --audio meow.wav
purrsight predict --model outputs/demo/bundle --video clip.mp4 --mode labels
purrsight evaluate --model outputs/demo/bundle --data data/demo/test.jsonl --out outputs/eval
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run_export(checkpoint: str, out: str, merge_lora: bool, quantize: str | None) -> dict:
    from purrsight.inference.export import export_bundle

    info = export_bundle(checkpoint, out, merge_lora=merge_lora, quantize=quantize)
    print(f"bundle: {out} (llm {info['llm']['kind']}, {info['sizes']['bundle_mb']:.1f} MB)")
    if info.get("quantization"):
        q = info["quantization"]
        print(f"LLM weights: fp32 {q['llm_fp32_mb']:.1f} MB -> int8 {q['llm_int8_mb']:.1f} MB")
    return info


def run_predict(
    model: str,
    image: str | None,
    audio: str | None,
    video: str | None,
    text: str | None,
    mode: str,
    threshold: float | None,
    details: bool,
) -> int:
    from purrsight.inference.predictor import Predictor

    predictor = Predictor.from_bundle(model, unsure_threshold=threshold)
    prediction = predictor.predict(image=image, audio=audio, video=video, text=text, mode=mode)
    if prediction.status == "invalid":
        print(
            f"warning: the generated report was invalid ({prediction.error}); "
            "the report below comes from label scoring alone",
            file=sys.stderr,
        )
    out: Any = prediction.to_dict() if details else prediction.report.model_dump(mode="json")
    print(json.dumps(out, indent=2))
    return 0


def run_evaluate(
    model: str, data: str, out: str, max_generate: int | None, mlflow: bool
) -> dict[str, Any]:
    from purrsight.inference.evaluate import evaluate_bundle
    from purrsight.inference.predictor import Predictor

    predictor = Predictor.from_bundle(model)
    metrics = evaluate_bundle(predictor, data, out, max_generate=max_generate)
    print(headline(metrics))
    print(f"written: {', '.join(str(Path(out) / n) for n in _files())}")
    if mlflow:
        from purrsight.train.tracking import log_evaluation

        run_id = log_evaluation(metrics, Path(out), predictor.bundle.info)
        print(f"MLflow run {run_id}")
    return metrics


def _files() -> tuple[str, ...]:
    from purrsight.inference.evaluate import OUTPUT_FILES

    return OUTPUT_FILES


def headline(metrics: dict[str, Any]) -> str:
    """One line per system: the figures a person looks at first."""
    lines = []
    for system in ("label_scoring", "generation", "report"):
        m = metrics[system]
        if not m.get("n"):
            lines.append(f"{system:14s} (not run)")
            continue
        subsets = m["subsets"]
        parts = ", ".join(
            f"{name} {subsets[name]['macro_f1']:.3f}"
            for name in ("image_only", "audio_only", "both")
            if subsets[name].get("n")
        )
        lines.append(
            f"{system:14s} n={m['n']:3d} macro-F1 {m['macro_f1']:.3f} accuracy "
            f"{m['accuracy']:.3f} ECE {m['ece']:.3f} (baseline acc {m['baseline']['accuracy']:.3f}; "
            f"per subset macro-F1: {parts})"
        )
    return "\n".join(lines)
