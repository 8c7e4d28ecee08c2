"""The bodies of ``purrsight export | predict | evaluate`` (cli.py only parses arguments).

purrsight export --checkpoint outputs/checkpoints/last.ckpt --out outputs/demo/bundle
purrsight predict --model outputs/demo/bundle --image cat.jpg --audio meow.wav
purrsight predict --model outputs/demo/bundle --video clip.mp4 --mode labels
purrsight evaluate --model outputs/demo/bundle --data data/demo/test.jsonl --out outputs/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def run_export(
    checkpoint: str,
    out: str,
    merge_lora: bool,
    quantize: str | None,
    reading_data: str | None = None,
    reading: bool = True,
) -> dict:
    from purrsight.inference.export import export_bundle
    from purrsight.inference.reading_export import fit_reading_for_checkpoint

    info = export_bundle(checkpoint, out, merge_lora=merge_lora, quantize=quantize)
    if reading:
        fitted = fit_reading_for_checkpoint(Path(out), checkpoint, reading_data)
        if fitted is not None:
            accuracy = {h.name: h.fit.get("val_accuracy") for h in fitted.heads}
            print(f"reading heads fitted on {fitted.data} (val accuracy {accuracy})")
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


def _ece(m: dict[str, Any]) -> str:
    """The calibration error, or ``–`` for free generation (it writes no probability)."""
    return "–" if m.get("ece") is None else f"{m['ece']:.3f}"


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
            f"{system:14s} n={m['n']:3d} macro-F1 {m['macro_f1']:.3f} "
            f"[{m['intervals']['macro_f1'][0]:.3f}, {m['intervals']['macro_f1'][1]:.3f}] accuracy "
            f"{m['accuracy']:.3f} ECE {_ece(m)} (baseline acc {m['baseline']['accuracy']:.3f}; "
            f"per subset macro-F1: {parts})"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI wiring


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    run_export(
        args.checkpoint,
        args.out,
        args.merge_lora,
        args.quantize,
        reading_data=args.data,
        reading=not args.no_reading_heads,
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    return run_predict(
        args.model,
        args.image,
        args.audio,
        args.video,
        args.text,
        args.mode,
        args.threshold,
        args.details,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    run_evaluate(args.model, args.data, args.out, args.max_generate, args.mlflow)
    return 0


def add_bundle_commands(commands: Any) -> None:
    """``export``, ``predict`` and ``evaluate`` on cli.py's sub-parser collection."""
    export = commands.add_parser("export", help="a Phase 2 checkpoint -> a self-describing bundle")
    export.add_argument("--checkpoint", required=True, help="Phase 2 .ckpt (e.g. last.ckpt)")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--merge-lora", action="store_true", help="fold LoRA into the LLM")
    export.add_argument("--quantize", choices=["int8"], default=None, help="CPU int8 LLM")
    export.add_argument(
        "--data",
        default=None,
        help="folder with train.jsonl + val.jsonl for the reading heads (default: the "
        "checkpoint config's data_dir)",
    )
    export.add_argument(
        "--no-reading-heads",
        action="store_true",
        help="no reading heads: the emotion is the LLM's label scores, the evidence generated",
    )
    export.set_defaults(func=cmd_export)

    predict = commands.add_parser("predict", help="a report for one cat (any media subset)")
    predict.add_argument("--model", required=True, help="bundle folder (purrsight export)")
    predict.add_argument("--image", help="photo (jpg, png, webp, bmp)")
    predict.add_argument("--audio", help="sound (wav, flac, ogg, mp3)")
    predict.add_argument("--video", help="video (mp4, mov, webm, …): frames + sound track")
    predict.add_argument("--text", help="the owner's note, added to the question")
    predict.add_argument(
        "--mode",
        choices=["report", "labels"],
        default="report",
        help="report: generate the full report; labels: label scoring only",
    )
    predict.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="unsure below this label probability (default: the bundle's)",
    )
    predict.add_argument(
        "--details", action="store_true", help="print probabilities, status and timings too"
    )
    predict.set_defaults(func=cmd_predict)

    evaluate = commands.add_parser("evaluate", help="score a bundle on a labelled JSONL split")
    evaluate.add_argument("--model", required=True, help="bundle folder")
    evaluate.add_argument("--data", required=True, help="labelled JSONL (e.g. test.jsonl)")
    evaluate.add_argument("--out", default="outputs/evaluate", help="folder for the results")
    evaluate.add_argument(
        "--max-generate",
        type=_count,
        default=None,
        metavar="N",
        help="free generation on the first N samples per modality subset (default: all; "
        "0: label scoring only)",
    )
    evaluate.add_argument("--mlflow", action="store_true", help="log the run to outputs/mlruns")
    evaluate.set_defaults(func=cmd_evaluate)
