"""Where a Phase 2 training step's time goes on a GPU: launch-bound or compute-bound.

    PYTHONPATH=src python benchmarks/gpu_profile.py [--variants ours ours_dense] [--smoke]

Builds the same Qwen2.5-0.5B-shaped model and batches as ``gpu_report.py`` (whose helpers it
imports), runs ``--warmup`` steps, then profiles ``--steps`` steps with ``torch.profiler``
and prints, per variant: wall time per step, the GPU's busy time per step (sum of kernel
times), the number of kernels launched per step, and the ten ops with the most self CUDA
time. A step whose busy time is far below its wall time is bound by the CPU launching
kernels (Python, PEFT and Hugging Face overhead), not by the GPU's arithmetic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_report as report  # noqa: E402 - the benchmark's own helpers


def profile_variant(name: str, smoke: bool, warmup: int, steps: int) -> dict[str, float]:
    """Profile ``steps`` training steps of one variant of ``gpu_report.VARIANTS``."""
    variant = next(v for v in report.VARIANTS if v.name == name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = report.TINY if smoke else report.QWEN25_05B
    work = report.workloads(smoke)[variant.workload]
    model = report.build_model(shape, variant, device)
    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=2e-4, fused=device.type == "cuda"
    )
    batches = []
    for i, lengths in enumerate(report.batches_for(work, variant, shape["vocab_size"])):
        pad = work.max_length if variant.pad_to_max else max(lengths)
        batch = report.make_batch(lengths, pad, shape["vocab_size"], i)
        batches.append(report.to_device(batch, device))
    for i in range(warmup):
        report.train_step(model, batches[i % len(batches)], variant, optimizer)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for i in range(steps):
            report.train_step(model, batches[(warmup + i) % len(batches)], variant, optimizer)
        sync()
    wall = (time.perf_counter() - started) / steps
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6 / steps if kernels else 0.0
    print(
        f"\n== {name}: wall {1000 * wall:.1f} ms/step (profiled), GPU busy {1000 * busy:.1f} "
        f"ms/step ({100 * busy / wall:.0f} %), {len(kernels) / steps:.0f} kernels/step"
    )
    sort = "self_cuda_time_total" if kernels else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=10, max_name_column_width=60))
    del model, optimizer, batches
    return {"wall_ms": 1000 * wall, "busy_ms": 1000 * busy, "kernels": len(kernels) / steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline_bf16", "ours", "ours_dense"])
    parser.add_argument("--smoke", action="store_true", help="tiny model (CPU unless CUDA)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    for name in args.variants:
        profile_variant(name, args.smoke, args.warmup, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
