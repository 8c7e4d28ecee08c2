"""The bodies of ``purrsight export | predict | evaluate`` (cli.py only parses arguments).

purrsight export --checkpoint outputs/checkpoints/last.ckpt --out outputs/demo/bundle
purrsight predict --model outputs/demo/bundle --image cat.jpg --audio meow.wav
purrsight predict --model outputs/demo/bundle --video clip.mp4 --mode labels
purrsight predict --model outputs/demo/bundle --inputs photos/ --out results.jsonl --mode labels
purrsight evaluate --model outputs/demo/bundle --data data/demo/test.jsonl --out outputs/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from purrsight.inference.errors import InputError


def run_export(
    checkpoint: str,
    out: str,
    merge_lora: bool,
    quantize: str | None,
    reading_data: str | None = None,
    reading: bool = True,
) -> dict:
    from purrsight.inference.bundle_manifest import read_manifest
    from purrsight.inference.export import export_bundle
    from purrsight.inference.reading_export import fit_reading_for_checkpoint
    from purrsight.report import writes_reading

    info = export_bundle(checkpoint, out, merge_lora=merge_lora, quantize=quantize)
    fitted = fit_reading_for_checkpoint(Path(out), checkpoint, reading_data) if reading else None
    if fitted is not None:
        accuracy = {h.name: h.fit.get("val_accuracy") for h in fitted.heads}
        print(f"reading heads fitted on {fitted.data} (val accuracy {accuracy})")
    else:
        fields = read_manifest(Path(out)).prompt.answer_fields
        if not writes_reading(fields):
            print(
                f"warning: this bundle answers labels only: its LLM writes {fields} and it "
                "has no reading heads to write the evidence (export with --data DIR for them)"
            )
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
    imports_started = process_seconds()
    from purrsight.inference.predictor import Predictor
    from purrsight.threads import configure

    imported = process_seconds()
    predictor = Predictor.from_bundle(model, unsure_threshold=threshold)
    configure()  # torch's threads from the cores idle while the bundle loaded
    loaded = process_seconds()
    prediction = predictor.predict(image=image, audio=audio, video=video, text=text, mode=mode)
    answered = process_seconds()
    if prediction.status == "invalid":
        print(
            f"warning: the generated report was invalid ({prediction.error}); "
            "the report below comes from label scoring alone",
            file=sys.stderr,
        )
    out: Any = prediction.to_dict() if details else prediction.report.model_dump(mode="json")
    if details and answered is not None:
        # Seconds of this process: start to the predictor's imports done (the CLI's own
        # imports and the predictor's), the bundle's load, the first call (lazy loading of
        # the encoders included). benchmarks/cold_start.py reads them.
        out["startup"] = {
            "imports": round(imported, 3),
            "predictor_imports": round(imported - imports_started, 3),
            "bundle_load": round(loaded - imported, 3),
            "first_call": round(answered - loaded, 3),
            "to_answer": round(answered, 3),
        }
    print(json.dumps(out, indent=2))
    return 0


def process_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``; 10 ms ticks), else None."""
    import os

    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


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
    for system in ("label_scoring", "llm_alone", "generation", "report"):
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    if args.upgrade:
        return run_upgrade(args.upgrade)
    if not args.checkpoint or not args.out:
        raise InputError("export needs --checkpoint and --out (or --upgrade BUNDLE)")
    run_export(
        args.checkpoint,
        args.out,
        args.merge_lora,
        args.quantize,
        reading_data=args.data,
        reading=not args.no_reading_heads,
    )
    return 0


def run_upgrade(bundle: str) -> int:
    """``purrsight export --upgrade BUNDLE``: an older export's bundle gets its ready LLM."""
    from purrsight.inference.ready_llm import add_ready_llm

    ready = add_ready_llm(bundle)
    if ready is None:
        print(f"{bundle}: this model cannot be made ready (see the warning); it loads as before")
        return 1
    print(f"{bundle}: ready LLM written ({', '.join(ready.files)})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.inputs is not None:
        return _cmd_predict_batch(args)
    if args.out or args.resume or args.overwrite or args.strict:
        raise InputError("--out, --resume, --overwrite and --strict go with --inputs")
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


def _cmd_predict_batch(args: argparse.Namespace) -> int:
    given = [f"--{n}" for n in ("image", "audio", "video", "text") if getattr(args, n)]
    if given:
        raise InputError(f"--inputs takes the media from the folder or manifest, not {given}")
    if not args.out:
        raise InputError("--inputs needs --out results.jsonl")
    if args.details:
        raise InputError("--details is for one input; every line of --out has the details")
    if args.resume and args.overwrite:
        raise InputError("--resume continues --out, --overwrite replaces it: not both")
    from purrsight.jobs.predict_batch import run_predict_batch

    return run_predict_batch(
        args.model,
        args.inputs,
        args.out,
        mode=args.mode,
        threshold=args.threshold,
        resume=args.resume,
        overwrite=args.overwrite,
        strict=args.strict,
        batch_size=args.batch_size,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    run_evaluate(args.model, args.data, args.out, args.max_generate, args.mlflow)
    return 0


def add_bundle_commands(commands: Any) -> None:
    """``export``, ``predict`` and ``evaluate`` on cli.py's sub-parser collection."""
    export = commands.add_parser("export", help="a Phase 2 checkpoint -> a self-describing bundle")
    export.add_argument("--checkpoint", help="Phase 2 .ckpt (e.g. last.ckpt)")
    export.add_argument("--out", help="bundle folder to write")
    export.add_argument(
        "--upgrade",
        metavar="BUNDLE",
        help="add the ready-to-map LLM to a bundle of an older export (no checkpoint needed)",
    )
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
    batch = predict.add_argument_group("many inputs in one run")
    batch.add_argument(
        "--inputs",
        metavar="DIR_OR_JSONL",
        help="a folder (image + sound paired by file name, videos whole) or a JSONL manifest",
    )
    batch.add_argument("--out", metavar="RESULTS.jsonl", help="one JSON line per input (+ .csv)")
    batch.add_argument("--resume", action="store_true", help="continue --out, skip what it has")
    batch.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    batch.add_argument("--strict", action="store_true", help="exit 1 if any input failed")
    batch.add_argument(
        "--batch-size", type=_positive, default=8, metavar="N", help="inputs per batch (8)"
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
