"""``purrsight evaluate``: score a bundle on a labelled JSONL split.

Four ways of reading the emotion are scored on the same samples:

* ``label_scoring`` — the cheap path: label likelihoods after the prompt, no generation
  (every sample; one prompt pass + one batched pass over the labels each).
* ``llm_alone`` — the LLM's own label likelihoods, softmaxed, before the reading heads'
  blend and its calibration (a bundle without reading heads: the same as label_scoring).
* ``generation`` — free generation: the emotion the generated text names after parsing
  (an invalid report counts as wrong), its confidence the number the model wrote.
* ``report`` — what ``predict`` answers: the generated report with its emotion rescored at
  the point where the text names it (confidence = that label's probability).

Generation costs ~100x label scoring on a CPU, so ``max_generate`` limits it to the first
N samples of each modality subset (None: all). Metrics per system: accuracy, macro-F1,
balanced accuracy, per-class precision/recall/F1, the confusion matrix, the majority-class
baseline, ECE (10 bins) and the reliability bins, overall and per modality subset
(``image_only``, ``audio_only``, ``both``). ``unsure`` answers are scored by the label
they would have given (the top label) and counted separately (``unsure_rate``).

Accuracy and macro-F1 carry bootstrap 95 % intervals (``intervals``): a 63-sample split
cannot tell 0.45 from 0.55, and the interval says so.

Writes ``metrics.json``, ``report.md``, ``confusion_matrix.png``, ``reliability.png`` and
``predictions.jsonl`` (per sample: id, label, subset and each system's answer).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from purrsight.data.manifest import Sample, read_manifest
from purrsight.inference.metrics import (
    bootstrap_intervals,
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
)
from purrsight.inference.predictor import Predictor, Prepared
from purrsight.inference.reading import CUE_MODALITY, UNCLEAR
from purrsight.inference.report_parse import parse_report
from purrsight.progress import Progress
from purrsight.report import Report
from purrsight.vocabulary import UNSURE

log = logging.getLogger(__name__)

SUBSETS = ("image_only", "audio_only", "both")
SYSTEMS = ("label_scoring", "llm_alone", "generation", "report")
OUTPUT_FILES = (
    "metrics.json",
    "report.md",
    "confusion_matrix.png",
    "reliability.png",
    "predictions.jsonl",
)


@dataclass
class Scored:
    """One system's answer for one sample."""

    predicted: str | None
    """A label, or None (no readable label)."""
    confidence: float | None
    """None where the answer carries no probability (free generation writes none)."""
    unsure: bool = False
    valid: bool = True


def subset_of(sample: Sample) -> str:
    has_image = sample.image is not None or sample.video is not None
    has_audio = sample.audio is not None or sample.video is not None
    if has_image and has_audio:
        return "both"
    return "image_only" if has_image else "audio_only"


def evaluate_bundle(
    predictor: Predictor,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    max_generate: int | None = None,
) -> dict[str, Any]:
    """Score ``predictor`` on the labelled split ``data_path``; write the four files to
    ``out_dir`` and return the metrics (as in ``metrics.json``)."""
    started = time.perf_counter()
    labels = predictor.labels
    samples = [s for s in read_manifest(data_path, labels) if s.label is not None]
    if not samples:
        raise ValueError(f"{data_path}: no labelled samples to evaluate")
    prepared = _prepare_all(predictor, samples)
    timings: dict[str, float] = {"prepare": time.perf_counter() - started}

    t0 = time.perf_counter()
    label_preds = predictor.predict_prepared(prepared, mode="labels", progress="label scoring")
    timings["label_scoring"] = time.perf_counter() - t0
    answers: dict[str, dict[int, Scored]] = {s: {} for s in SYSTEMS}
    for i, pred in enumerate(label_preds):
        answers["label_scoring"][i] = _from_probabilities(pred.probabilities, pred.report.emotion)
        if pred.llm_probabilities is not None:  # the LLM's own scores, uncalibrated
            answers["llm_alone"][i] = _from_probabilities(pred.llm_probabilities, "")

    chosen = _generation_indices(samples, max_generate)
    t0 = time.perf_counter()
    reports: dict[int, Any] = {}
    if chosen:
        predictions = predictor.predict_prepared(
            [prepared[i] for i in chosen], mode="report", progress="generate"
        )
        for i, pred in zip(chosen, predictions, strict=True):
            reports[i] = pred
            answers["report"][i] = _from_probabilities(pred.probabilities, pred.report.emotion)
            answers["generation"][i] = _generated(pred, labels)
    timings["generation"] = time.perf_counter() - t0

    metrics: dict[str, Any] = {
        "data": str(data_path),
        "bundle": str(predictor.bundle.path),
        "labels": labels,
        "n": len(samples),
        "unsure_threshold": predictor.unsure_threshold,
        "max_generate": max_generate,
        "subset_sizes": {name: sum(subset_of(s) == name for s in samples) for name in SUBSETS},
    }
    truth = [s.label for s in samples]
    subsets = [subset_of(s) for s in samples]
    for system in SYSTEMS:
        metrics[system] = _system_metrics(answers[system], truth, subsets, labels)
    metrics["cues"] = cue_metrics(samples, {i: p.report for i, p in reports.items()})
    timings["total"] = time.perf_counter() - started
    metrics["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    write_outputs(metrics, Path(out_dir))
    path = Path(out_dir) / "predictions.jsonl"
    write_predictions(samples, answers, reports, path, label_preds)
    return metrics


def write_predictions(
    samples: Sequence[Sample],
    answers: dict[str, dict[int, Scored]],
    reports: dict[int, Any],
    path: Path,
    label_preds: Sequence[Any] = (),
) -> Path:
    """One JSON line per sample, in split order: ``id``, ``label``, ``subset``, per
    system that answered it ``{"predicted", "confidence", "unsure", "valid"}``, and the
    report (``report_json``) with its ``cue_confidence`` where one was made."""
    with path.open("w", encoding="utf-8") as handle:
        for i, sample in enumerate(samples):
            line: dict[str, Any] = {
                "id": sample.id,
                "label": sample.label,
                "subset": subset_of(sample),
            }
            for system in SYSTEMS:
                if i in answers[system]:
                    line[system] = asdict(answers[system][i])
            if i < len(label_preds):  # the label distributions, for alert and ECE studies
                line["probabilities"] = label_preds[i].probabilities
                line["llm_probabilities"] = label_preds[i].llm_probabilities
            if i in reports:
                line["report_json"] = reports[i].report.model_dump(mode="json")
                line["cue_confidence"] = reports[i].cue_confidence
            handle.write(json.dumps(line) + "\n")
    return path


def _prepare_all(predictor: Predictor, samples: Sequence[Sample]) -> list[Prepared]:
    """Every sample decoded and encoded (the split's own question as its instruction, as
    in training), with progress lines: the encoders take seconds per sample on a CPU."""
    progress = Progress("decode and encode", len(samples), log, unit="sample")
    prepared = []
    for sample in samples:
        p = predictor.prepare(image=sample.image, audio=sample.audio, video=sample.video)
        p.instruction = sample.instruction
        prepared.append(p)
        progress.update(len(prepared))
    return prepared


def _generation_indices(samples: Sequence[Sample], limit: int | None) -> list[int]:
    """The first ``limit`` samples of each modality subset (all when None)."""
    if limit is None:
        return list(range(len(samples)))
    taken = {name: 0 for name in SUBSETS}
    chosen = []
    for i, sample in enumerate(samples):
        name = subset_of(sample)
        if taken[name] < limit:
            taken[name] += 1
            chosen.append(i)
    return chosen


def _from_probabilities(probabilities: dict[str, float], emotion: str) -> Scored:
    top = max(probabilities, key=probabilities.__getitem__)
    return Scored(top, probabilities[top], unsure=emotion == UNSURE)


def _generated(prediction: Any, labels: Sequence[str]) -> Scored:
    """What the model's own text says; a bundle whose reading heads fix the whole answer
    generates nothing, and its report is the answer."""
    if prediction.raw_text is None:
        report = prediction.report
        return Scored(report.emotion if report.emotion in labels else None, None)
    return _from_text(prediction.raw_text, labels)


def cue_metrics(samples: Sequence[Sample], reports: dict[int, Report]) -> dict[str, Any]:
    """Per cue, the accuracy of the reports' evidence against the cues the data records
    (a structured ``response``), on the samples that have the cue's input; per modality
    subset too. ``unclear`` answers count as wrong (and are counted). Empty when the data
    carries no cues."""
    out: dict[str, Any] = {}
    for cue, modality in CUE_MODALITY.items():
        rows = [
            (i, truth)
            for i, s in enumerate(samples)
            if i in reports and (truth := _recorded(s, cue)) is not None and _has(s, modality)
        ]
        if not rows:
            continue
        said = [getattr(reports[i].evidence, cue) for i, _ in rows]
        hits = [a == t for a, (_, t) in zip(said, rows, strict=True)]
        out[cue] = {
            "n": len(rows),
            "accuracy": sum(hits) / len(rows),
            "unclear_rate": sum(a == UNCLEAR for a in said) / len(rows),
            "subsets": {
                name: _mean(
                    [
                        h
                        for h, (i, _) in zip(hits, rows, strict=True)
                        if subset_of(samples[i]) == name
                    ]
                )
                for name in SUBSETS
            },
        }
    return out


def _recorded(sample: Sample, cue: str) -> str | None:
    response = sample.response
    return getattr(response.evidence, cue) if isinstance(response, Report) else None


def _has(sample: Sample, modality: str) -> bool:
    return getattr(sample, modality) is not None or sample.video is not None


def _mean(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _from_text(text: str, labels: Sequence[str]) -> Scored:
    parsed = parse_report(text, labels)
    if parsed.report is None:
        return Scored(None, 0.0, valid=False)
    return Scored(parsed.report.emotion, parsed.report.confidence)


def _system_metrics(
    answers: dict[int, Scored], truth: Sequence[str], subsets: Sequence[str], labels: list[str]
) -> dict[str, Any]:
    """Metrics over every answered sample, then per modality subset."""
    if not answers:
        return {"n": 0}
    out = _metrics_for(sorted(answers), answers, truth, labels)
    out["subsets"] = {}
    for name in SUBSETS:
        rows = [i for i in sorted(answers) if subsets[i] == name]
        out["subsets"][name] = _metrics_for(rows, answers, truth, labels) if rows else {"n": 0}
    return out


def _metrics_for(
    rows: list[int], answers: dict[int, Scored], truth: Sequence[str], labels: list[str]
) -> dict[str, Any]:
    y_true = [truth[i] for i in rows]
    y_pred = [answers[i].predicted for i in rows]
    metrics = classification_metrics(y_true, y_pred, labels)
    metrics["intervals"] = bootstrap_intervals(y_true, y_pred, labels)
    confidences = [answers[i].confidence for i in rows]
    correct = [answers[i].predicted == truth[i] for i in rows]
    calibrated = all(c is not None for c in confidences)  # free generation gives none
    metrics["ece"] = expected_calibration_error(confidences, correct) if calibrated else None
    metrics["reliability"] = calibration_bins(confidences, correct) if calibrated else []
    metrics["mean_confidence"] = sum(confidences) / len(rows) if calibrated else None
    metrics["unsure_rate"] = sum(answers[i].unsure for i in rows) / len(rows)
    metrics["valid_rate"] = sum(answers[i].valid for i in rows) / len(rows)
    return metrics


# ----------------------------------------------------------------------------- outputs


def write_outputs(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """``metrics.json``, ``report.md`` and the two figures."""
    from purrsight.inference.plots import plot_confusion, plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown_report(metrics), encoding="utf-8")
    shown = [s for s in SYSTEMS if metrics[s].get("n")]
    plot_confusion({s: metrics[s] for s in shown}, out_dir / "confusion_matrix.png")
    calibrated = [s for s in shown if metrics[s].get("reliability")]  # ones with a confidence
    plot_reliability({s: metrics[s] for s in calibrated}, out_dir / "reliability.png")
    return [out_dir / name for name in OUTPUT_FILES]


def _interval(m: dict[str, Any], name: str = "macro_f1") -> str:
    """``[0.412, 0.633]``: the bootstrap 95 % interval of ``name``."""
    low, high = m["intervals"][name]
    return f"[{low:.3f}, {high:.3f}]"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_report(metrics: dict[str, Any]) -> str:
    """A readable summary: the headline table, subsets, per-class scores per system."""
    lines = [
        "# Purr-Sight evaluation",
        "",
        f"- data: `{metrics['data']}` ({metrics['n']} labelled samples: "
        + ", ".join(f"{k} {v}" for k, v in metrics["subset_sizes"].items())
        + ")",
        f"- bundle: `{metrics['bundle']}`",
        f"- unsure threshold: {metrics['unsure_threshold']}; free generation on "
        + (
            "every sample"
            if metrics["max_generate"] is None
            else "none"
            if metrics["max_generate"] == 0
            else f"the first {metrics['max_generate']} samples of each subset"
        ),
        "",
        "| system | n | accuracy | macro-F1 [95 % interval] | balanced acc. | ECE | mean conf. "
        "| unsure | valid | majority baseline acc. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        m = metrics[system]
        if not m.get("n"):
            lines.append(f"| {system} | 0 | – | – | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {system} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['macro_f1'])} "
            f"{_interval(m)} | "
            f"{_fmt(m['balanced_accuracy'])} | {_fmt(m['ece'])} | {_fmt(m['mean_confidence'])} "
            f"| {_fmt(m['unsure_rate'])} | {_fmt(m['valid_rate'])} | "
            f"{_fmt(m['baseline']['accuracy'])} ({m['baseline']['label']}) |"
        )
    lines += ["", "## Macro-F1 per modality subset", ""]
    lines += ["| system | " + " | ".join(SUBSETS) + " |", "|---|" + "---|" * len(SUBSETS)]
    for system in SYSTEMS:
        subsets = metrics[system].get("subsets", {})
        cells = [
            f"{_fmt(subsets[name]['macro_f1'])} (n={subsets[name]['n']})"
            if subsets.get(name, {}).get("n")
            else "–"
            for name in SUBSETS
        ]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    for system in SYSTEMS:
        m = metrics[system]
        if not m.get("n"):
            continue
        lines += [
            "",
            f"## Per class: {system}",
            "",
            "| label | precision | recall | F1 | support |",
        ]
        lines.append("|---|---|---|---|---|")
        for label, s in m["per_class"].items():
            lines.append(
                f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
                f"{s['support']} |"
            )
    lines += [
        "",
        "Figures: `confusion_matrix.png` (rows = true label, columns = predicted; "
        "`none` = no readable label), `reliability.png` (accuracy against confidence, "
        "10 bins; the diagonal is perfect calibration).",
        "",
    ]
    return "\n".join(lines)


def summary_for_demo(metrics: dict[str, Any]) -> dict[str, float]:
    """The figures ``make demo`` puts in summary.json (label scoring, the cheap path
    every sample gets)."""
    m = metrics["label_scoring"]
    subsets = m["subsets"]
    part = {
        "macro_f1": round(m["macro_f1"], 4),
        "accuracy": round(m["accuracy"], 4),
        "ece": round(m["ece"], 4),
        "image_only_macro_f1": round(subsets["image_only"].get("macro_f1", 0.0), 4),
        "audio_only_macro_f1": round(subsets["audio_only"].get("macro_f1", 0.0), 4),
    }
    for system in ("generation", "report"):  # only where they ran (max_generate > 0)
        if metrics[system].get("n"):
            part[f"{system}_macro_f1"] = round(metrics[system]["macro_f1"], 4)
    if metrics["report"].get("n"):
        part["report_valid_rate"] = round(metrics["report"]["valid_rate"], 4)
    low, high = m["intervals"]["macro_f1"]
    part["macro_f1_interval"] = [round(low, 4), round(high, 4)]
    part["test_samples"] = m["n"]
    part["cue_accuracy"] = {c: round(v["accuracy"], 4) for c, v in metrics.get("cues", {}).items()}
    return part
