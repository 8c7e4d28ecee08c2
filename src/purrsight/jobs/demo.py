"""The main job on the embedded default (``make demo``): demo data, Phase 1, Phase 2, the
test split's reports, then the exported bundle (``outputs/demo/bundle``) evaluated.

Each stage prints what it produced; ``outputs/demo/summary.json`` collects the
figures (later stages add their own parts to it).
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from purrsight.config import Config
from purrsight.files import atomic_write
from purrsight.memory import release_freed_memory

log = logging.getLogger(__name__)

PHASE1_SUMMARY_KEYS = ("i2t_r1", "a2t_r1", "i2a_r1", "chance_r1", "zero_shot_acc")


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def ensure_demo_data(config: Config, regenerate: bool) -> dict[str, Any]:
    """Generate the demo data set into ``phase1.data_dir`` unless it is already there."""
    from purrsight.data.demo import generate_demo_dataset, make_contact_sheet

    data_dir = Path(config.phase1.data_dir)
    if (data_dir / "train.jsonl").is_file() and not regenerate:
        n = sum(1 for line in (data_dir / "all.jsonl").open() if line.strip())
        print(f"demo data already in {data_dir}: {n} samples (use --regenerate to remake it)")
        return {"n": n, "out_dir": str(data_dir), "reused": True}
    summary = generate_demo_dataset(
        data_dir,
        n=config.demo.n,
        seed=config.demo.seed,
        labels=config.labels,
        n_subjects_per_label=config.demo.subjects_per_label,
        split_ratios=tuple(config.demo.split),
    )
    summary["contact_sheet"] = str(make_contact_sheet(data_dir, data_dir / "contact_sheet.png"))
    print(json.dumps(summary, indent=2))
    return summary


def write_summary(path: Path, part: dict[str, Any]) -> dict[str, Any]:
    """Merge ``part`` into the summary file (other stages' parts are kept)."""
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(part)
    atomic_write(path, json.dumps(summary, indent=2))
    return summary


def _log_to_console_in_child() -> None:
    """The parent's logging setup in a spawned child, which starts with none: without it
    the child's INFO lines (Phase 1's progress) would be dropped."""
    from purrsight.console_log import console_handler, level_from_env

    if not logging.getLogger().handlers:
        logging.basicConfig(level=level_from_env(), handlers=[console_handler()])


def _phase1_in_child(config: Config, config_path: str | None) -> tuple[dict[str, Any], str]:
    """Phase 1 as :func:`_phase1_stage` needs it, in the child process."""
    from purrsight.train.phase1 import run_phase1

    _log_to_console_in_child()
    result = run_phase1(config, config_path)
    phase1 = {k: round(result.metrics[k], 4) for k in PHASE1_SUMMARY_KEYS if k in result.metrics}
    phase1["seconds"] = round(result.seconds, 1)
    phase1["aligner"] = str(result.aligner_path)
    return phase1, str(result.aligner_path)


# What stages 3-5 import (5.5 s on one core here): imported while Phase 1's child runs,
# whose aligner training keeps only one of two cores busy.
LATER_STAGES_MODULES = (
    "purrsight.train.phase2",
    "purrsight.inference.export",
    "purrsight.inference.reading_export",
    "purrsight.inference.evaluate",
)


def _import_later_stages() -> None:
    for name in LATER_STAGES_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the stage's own import reports it, in its place
            log.debug("early import of %s failed", name, exc_info=True)


def _phase1_stage(config: Config, config_path: str | None) -> tuple[dict[str, Any], Path]:
    """Phase 1 in a child process: the encoders and their libraries (~330 MB resident that
    a trim cannot give back) leave with it instead of sitting under Phase 2's peak. The
    parent meanwhile imports what the later stages need, on the core Phase 1 leaves idle."""
    context = multiprocessing.get_context("spawn")
    importer = threading.Thread(target=_import_later_stages, name="import-later-stages")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(_phase1_in_child, config, config_path)
        importer.start()
        phase1, aligner = job.result()
    importer.join()
    print(f"aligner written to {aligner}")
    for key in ("i2t_r1", "a2t_r1"):
        if key in phase1:
            ratio = phase1[key] / phase1["chance_r1"]
            print(f"{key} = {phase1[key]:.3f}, {ratio:.1f}x chance ({phase1['chance_r1']:.3f})")
    return phase1, Path(aligner)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _phase2_stage(
    config: Config, config_path: str | None, aligner_path: Path
) -> tuple[dict[str, Any], Path | None]:
    """Train Phase 2 on the aligner just made. Returns the summary part and the last
    checkpoint."""
    from purrsight.train.phase2 import run_phase2

    config = config.model_copy(update={"phase1_checkpoint_path": str(aligner_path)})
    result = run_phase2(config, config_path)
    release_freed_memory()  # the trainer, its optimizer and loaders died with run_phase2
    losses = [entry["loss"] for entry in result.history]
    window = max(1, min(10, len(losses) // 4))  # single batches are noisy: average a few
    print(f"Phase 2 checkpoints: {result.last_checkpoint}")
    part = {
        "loss_first": round(_mean(losses[:window]), 4),
        "loss_last": round(_mean(losses[-window:]), 4),
        "loss_window_batches": window,
        "seconds": round(result.seconds, 1),
        "checkpoint": str(result.last_checkpoint),
    }
    return part, result.last_checkpoint


def _export_stage(config: Config, checkpoint: Path | None) -> tuple[dict[str, Any], Path]:
    """Export the trained checkpoint as ``<summary folder>/bundle`` and fit its reading
    heads on the training split's cached features (L2, temperatures, blend on val)."""
    from purrsight.inference.export import export_bundle
    from purrsight.inference.reading_export import fit_reading

    if checkpoint is None:
        raise RuntimeError("Phase 2 wrote no last.ckpt: nothing to export")
    t0 = time.perf_counter()
    bundle = Path(config.demo.summary_path).parent / "bundle"
    info = export_bundle(checkpoint, bundle)
    print(f"bundle: {bundle} ({info['sizes']['bundle_mb']:.1f} MB, LLM referenced by identity)")
    reading = fit_reading(bundle, config)
    part: dict[str, Any] = {"bundle": str(bundle)}
    if reading is not None:
        part["reading_val_accuracy"] = {h.name: h.fit.get("val_accuracy") for h in reading.heads}
        part["blend"] = {"llm_weight": reading.llm_weight, "head_weight": reading.head_weight}
        print(f"reading heads (val accuracy): {part['reading_val_accuracy']}")
        print(f"emotion blend: {part['blend']} (val NLL {reading.blend_fit})")
    part["seconds"] = round(time.perf_counter() - t0, 1)
    return part, bundle


def _evaluate_stage(config: Config, bundle: Path) -> dict[str, Any]:
    """Evaluate the bundle on the test split as a user's ``predict`` answers: label
    scoring and a full report for every sample."""
    from purrsight.inference.evaluate import evaluate_bundle, summary_for_demo
    from purrsight.inference.predictor import Predictor
    from purrsight.jobs.bundle_commands import headline

    t0 = time.perf_counter()
    out = Path(config.demo.summary_path).parent / "evaluate"
    from purrsight.precision import predict_precision

    predictor = Predictor.from_bundle(bundle, precision=predict_precision(config.precision))
    metrics = evaluate_bundle(predictor, Path(config.data_dir) / "test.jsonl", out)
    print(headline(metrics))
    example = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    print(f"one report: {json.dumps(example.get('report_json'), indent=2)}")
    print(f"evaluation: {out}/metrics.json, report.md, predictions.jsonl, figures")
    part = summary_for_demo(metrics)
    part["seconds"] = round(time.perf_counter() - t0, 1)
    return part


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's word elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hardware(config: Config) -> dict[str, Any]:
    """What the demo runs on and the precision that follows from it (printed first, so a
    user on a CPU without native bf16 sees why training runs in fp32)."""
    from purrsight.precision import (
        cpu_features_summary,
        resolve_precision,
        training_device_type,
    )

    choice = resolve_precision(config.precision, training_device_type())
    return {
        "cpu": _cpu_model(),
        "features": cpu_features_summary(),
        "precision": choice.precision,
        "reason": choice.reason,
    }


def time_breakdown(summary: dict[str, Any]) -> str:
    """``data 10 s, phase1 31 s, phase2 203 s, export 20 s, evaluate 30 s, total 294 s``."""
    parts = []
    for stage in ("data", "phase1", "phase2", "export", "evaluate"):
        parts.append(f"{stage} {summary[stage]['seconds']:.0f} s")
    parts.append(f"total {summary['total_seconds']:.0f} s")
    return ", ".join(parts)


def run_demo(config: Config, config_path: str | None, regenerate: bool = False) -> dict[str, Any]:
    """Every stage of the main job on the embedded default; returns the summary."""
    started = time.perf_counter()
    summary_path = Path(config.demo.summary_path)

    hardware = _hardware(config)
    print(
        f"hardware: {hardware['cpu']} ({hardware['features']}); "
        f"precision {config.precision} -> {hardware['precision']} ({hardware['reason']})"
    )
    write_summary(summary_path, {"hardware": hardware})

    _stage("1/5 demo data")
    t0 = time.perf_counter()
    data = ensure_demo_data(config, regenerate)
    data_part = {"n": data.get("n"), "out_dir": data.get("out_dir")}
    data_part["seconds"] = round(time.perf_counter() - t0, 1)

    _stage("2/5 Phase 1: contrastive alignment")
    phase1, aligner_path = _phase1_stage(config, config_path)  # its memory left with its child
    write_summary(summary_path, {"data": data_part, "phase1": phase1})

    _stage("3/5 Phase 2: projectors + LoRA on the LLM")
    phase2, checkpoint = _phase2_stage(config, config_path, aligner_path)

    write_summary(summary_path, {"phase2": phase2})
    release_freed_memory()  # the trainer's heap: the export starts from what is live

    _stage("4/5 export the bundle and fit its reading heads")
    export, bundle = _export_stage(config, checkpoint)
    write_summary(summary_path, {"export": export})

    _stage("5/5 evaluate the bundle on the test split")
    evaluate = _evaluate_stage(config, bundle)

    total = round(time.perf_counter() - started, 1)
    summary = write_summary(summary_path, {"evaluate": evaluate, "total_seconds": total})
    _stage(f"summary ({summary_path})")
    print(json.dumps(summary, indent=2))
    print("where the time went: " + time_breakdown(summary))
    return summary
