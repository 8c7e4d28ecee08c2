"""The main job on the embedded default (``make demo``): demo data, Phase 1, summary.

Each stage prints what it produced; ``outputs/demo/summary.json`` collects the
figures (later stages add their own parts to it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from purrsight.config import Config

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
        data_dir, n=config.demo.n, seed=config.demo.seed, labels=config.labels
    )
    summary["contact_sheet"] = str(make_contact_sheet(data_dir, data_dir / "contact_sheet.png"))
    print(json.dumps(summary, indent=2))
    return summary


def write_summary(path: Path, part: dict[str, Any]) -> dict[str, Any]:
    """Merge ``part`` into the summary file (other stages' parts are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(part)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    tmp.replace(path)
    return summary


def run_demo(config: Config, config_path: str | None, regenerate: bool = False) -> dict[str, Any]:
    from purrsight.train.phase1 import run_phase1

    started = time.perf_counter()
    summary_path = Path(config.demo.summary_path)

    _stage("1/2 demo data")
    t0 = time.perf_counter()
    data = ensure_demo_data(config, regenerate)
    data_seconds = time.perf_counter() - t0

    _stage("2/2 Phase 1: contrastive alignment")
    result = run_phase1(config, config_path)
    phase1 = {k: round(result.metrics[k], 4) for k in PHASE1_SUMMARY_KEYS if k in result.metrics}
    phase1["seconds"] = round(result.seconds, 1)
    phase1["aligner"] = str(result.aligner_path)
    print(f"aligner written to {result.aligner_path}")
    for key in ("i2t_r1", "a2t_r1"):
        if key in phase1:
            ratio = phase1[key] / phase1["chance_r1"]
            print(f"{key} = {phase1[key]:.3f}, {ratio:.1f}x chance ({phase1['chance_r1']:.3f})")

    total = time.perf_counter() - started
    summary = write_summary(
        summary_path,
        {
            "data": {
                "n": data.get("n"),
                "out_dir": data.get("out_dir"),
                "seconds": round(data_seconds, 1),
            },
            "phase1": phase1,
            "total_seconds": round(total, 1),
        },
    )
    _stage(f"summary ({summary_path})")
    print(json.dumps(summary, indent=2))
    return summary
