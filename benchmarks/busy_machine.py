"""Phase 2 training and inference speed alone and beside a busy process, per thread policy.

    python benchmarks/busy_machine.py [--steps N] [--json] [--config config/demo.yaml]

What it measures: seconds per training step (forward + backward + clip + AdamW step) and
per inference forward (no-grad, eval mode, like label scoring) of the real demo Phase 2
model, (a) alone and (b) while one other CPU-bound process (``python -c "while True:
pass"``, started before and killed after) shares the cores, and the slowdown b/a, for
each thread policy, in one run. Run it on an otherwise idle machine: anything else
running counts as a second busy process.

The model is built as ``benchmarks/phase2_throughput.py`` builds it (its ``build_model``):
the config's LLM (the embedded SmolLM2-135M for config/demo.yaml) with LoRA and
projectors, gradient checkpointing as the config says, the precision the config
resolves to on this CPU (autocast in that dtype, the frozen linears held in it, as
training does). The batch is fixed: 8 samples (the first 8 of ``<data_dir>/train.jsonl``
where it exists, their answers as the config's ``answer_fields`` write them, else a
built-in report) with image and audio slots and random unit aligned features
(throughput does not depend on their values): ~45 tokens a sample with the demo data
and its emotion-only answers.

Policies, each in a fresh process (OpenMP reads its variables when torch loads):

* ``default`` — torch's own count (one thread per core), no OpenMP variables: what ran
  before this benchmark.
* ``passive`` — ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep at once instead of
  spinning.
* ``one`` — ``OMP_NUM_THREADS=1``.
* ``adaptive`` — :class:`purrsight.threads.AdaptiveThreads`: the count from the cores
  other processes leave idle, decided at start and re-decided by ``poll()`` after every
  step (training polls every step and re-decides every 30 s; here every step, so that
  the short measurement sees the decision). When the busy process starts, one untimed
  step runs first, in which the poll notices it; that step's time is reported as
  ``notice_s``.

Each measurement is ``--steps`` training steps then ``--forwards`` inference forwards
(default: as many as steps), after one untimed warm-up of each at start; a measurement
stops early, after at least one step, once it has taken ``--max-seconds``, so that a
very slow policy cannot stretch the run. ``--json`` prints only
``{policy: {...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
    "adaptive": {},
}
OPENMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
BATCH = 8
MODALITIES = ["image", "audio"]
BUILT_IN_RESPONSE = json.dumps(
    {
        "evidence": {
            "ears": "upright",
            "eyes": "half-closed",
            "tail": "wrapped",
            "posture": "lying loaf",
            "vocalization": "trill",
        },
        "arousal": "low",
        "emotion": "content",
        "confidence": 0.7,
        "alternatives": [{"emotion": "in_pain", "p": 0.1}],
        "summary": "The cat appears peaceful and content, with the tail wrapped around it.",
        "advice": "No action needed; let it rest.",
        "welfare_alert": False,
    }
)


# ----------------------------------------------------------------------------- child


def texts(config) -> list[tuple[str, str]]:
    """(instruction, response) of the batch's 8 samples."""
    from purrsight.data.manifest import read_manifest

    path = Path(config.data_dir) / "train.jsonl"
    if path.is_file():
        samples = read_manifest(path, config.labels)[:BATCH]
        if len(samples) == BATCH:
            # The answer as training writes it (the config's answer_fields).
            return [(s.instruction, s.response_json(config.answer_fields)) for s in samples]
    return [("How does this cat feel?", BUILT_IN_RESPONSE)] * BATCH


def fixed_batch(config, tokenizer, embed_dim: int):
    import torch

    from purrsight.data.instruction import collate, encode_example, make_item

    generator = torch.Generator().manual_seed(0)
    items = []
    for i, (instruction, response) in enumerate(texts(config)):
        encoded = encode_example(
            tokenizer,
            MODALITIES,
            instruction,
            response,
            config.num_soft_tokens,
            config.max_text_length,
            sample_id=f"bench-{i}",
        )
        features = {}
        for m in MODALITIES:
            f = torch.randn(embed_dim, generator=generator)
            features[m] = f / f.norm()
        items.append(make_item(encoded, features, f"bench-{i}"))
    return collate(items, int(tokenizer.pad_token_id), pad_to_multiple_of=config.pad_to_multiple_of)


class Timer:
    """Runs ``fn`` up to ``count`` times, stopping early past ``max_seconds``."""

    def __init__(self, max_seconds: float, after_each=None) -> None:
        self.max_seconds = max_seconds
        self.after_each = after_each or (lambda: None)

    def __call__(self, fn, count: int) -> dict[str, float]:
        done, started = 0, time.perf_counter()
        while done < count:
            fn()
            done += 1
            self.after_each()
            if time.perf_counter() - started > self.max_seconds:
                break
        seconds = time.perf_counter() - started
        return {"s": seconds / done, "n": done}


def start_busy() -> subprocess.Popen:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # running, and seen by the scheduler
    return busy


def stop_busy(busy: subprocess.Popen) -> None:
    busy.kill()
    busy.wait()


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from phase2_throughput import build_model

    from purrsight.config import load_config
    from purrsight.models.modes import eval_mode
    from purrsight.precision import resolve_precision
    from purrsight.threads import AdaptiveThreads

    config = load_config(args.config, list(args.set or []))
    governor = None
    if args.policy == "adaptive":
        governor = AdaptiveThreads(interval_s=0)
        governor.start()
    torch.manual_seed(config.seed)
    embed_dim = config.phase1.embed_dim
    model = build_model(config, MODALITIES, embed_dim, config.gradient_checkpointing)
    batch = fixed_batch(config, model.tokenizer, embed_dim)
    dtype = resolve_precision(config.precision, "cpu").autocast_dtype
    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    inputs = batch.model_inputs()

    def autocast():
        return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def train_step() -> None:
        with autocast():
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), config.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad(), eval_mode(model), autocast():
            model(**inputs)

    poll = governor.poll if governor is not None else None
    timed = Timer(args.max_seconds, poll)
    forwards = args.forwards or args.steps
    result: dict[str, Any] = {
        "tokens_per_sample": float(batch.attention_mask.sum()) / BATCH,
        "precision": str(dtype).replace("torch.", "") if dtype else "fp32",
    }
    with (
        tempfile.TemporaryDirectory(prefix="busy-bench-") as spill,
        model.frozen_linears_as(dtype, spill_dir=Path(spill)),
    ):
        timed(train_step, 1)  # warm-up: allocator, oneDNN kernels
        timed(forward, 1)
        result["threads_alone"] = torch.get_num_threads()
        result["train_alone"] = timed(train_step, args.steps)
        result["infer_alone"] = timed(forward, forwards)
        busy = start_busy()
        try:
            if governor is not None:  # the poll after this step sees the busy process
                result["notice_s"] = timed(train_step, 1)["s"]
                result["notice_reason"] = governor.reason
            result["threads_busy"] = torch.get_num_threads()
            result["train_busy"] = timed(train_step, args.steps)
            result["infer_busy"] = timed(forward, forwards)
        finally:
            stop_busy(busy)
    if governor is not None:
        result["adaptive_reason"] = governor.reason
    return result


# ----------------------------------------------------------------------------- parent


def spawn(policy: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out = workdir / f"{policy}.json"
    command = [sys.executable, __file__, "--policy", policy, "--result", str(out)]
    command += ["--config", args.config, "--steps", str(args.steps)]
    command += ["--forwards", str(args.forwards), "--max-seconds", str(args.max_seconds)]
    for item in args.set or []:
        command += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env.update(POLICIES[policy])
    quiet = subprocess.DEVNULL if args.json else None
    proc = subprocess.run(command, env=env, stdout=quiet, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{policy} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def summary(result: dict[str, Any]) -> dict[str, Any]:
    row = {
        k: result[k] for k in ("threads_alone", "threads_busy", "precision", "tokens_per_sample")
    }
    for part in ("train", "infer"):
        alone, busy = result[f"{part}_alone"], result[f"{part}_busy"]
        row[f"{part}_alone_s"] = round(alone["s"], 3)
        row[f"{part}_busy_s"] = round(busy["s"], 3)
        row[f"{part}_slowdown"] = round(busy["s"] / alone["s"], 2)
        row[f"{part}_steps"] = [alone["n"], busy["n"]]
    if "notice_s" in result:
        row["notice_s"] = round(result["notice_s"], 3)
        row["notice_reason"] = result["notice_reason"]
        row["adaptive_reason"] = result["adaptive_reason"]
    return row


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'policy':<10}{'threads':>9}  {'train s/step':>12}{'busy':>8}{'ratio':>7}"
        f"  {'infer s/fwd':>12}{'busy':>8}{'ratio':>7}"
    )
    lines = [head, "-" * len(head)]
    for policy, r in rows.items():
        threads = f"{r['threads_alone']}/{r['threads_busy']}"
        lines.append(
            f"{policy:<10}{threads:>9}  {r['train_alone_s']:>12.2f}{r['train_busy_s']:>8.2f}"
            f"{r['train_slowdown']:>6.2f}x  {r['infer_alone_s']:>12.2f}{r['infer_busy_s']:>8.2f}"
            f"{r['infer_slowdown']:>6.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps (default 4)")
    parser.add_argument("--forwards", type=int, default=0, help="inference forwards (0: --steps)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--config", default="config/demo.yaml")
    parser.add_argument(
        "--policies", default=",".join(POLICIES), help=f"comma-separated, of {', '.join(POLICIES)}"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=40.0,
        help="a measurement stops after the step that passes this (default 40)",
    )
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    parser.add_argument("--policy", choices=tuple(POLICIES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.policy:
        Path(args.result).write_text(json.dumps(child(args)))
        return 0
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="busy-bench-") as tmp:
        rows = {p: summary(spawn(p, args, Path(tmp))) for p in policies}
    if args.json:
        print(json.dumps(rows))
        return 0
    first = next(iter(rows.values()))
    print(
        f"{os.cpu_count()} cores, {first['precision']}, batch {BATCH} × "
        f"{first['tokens_per_sample']:.0f} tokens; threads alone/busy; ratio = busy ÷ alone"
    )
    print(table(rows))
    for policy, r in rows.items():
        if "notice_s" in r:
            print(
                f"{policy}: the step in which it noticed the busy process took "
                f"{r['notice_s']:.2f} s ({r['notice_reason']} then); "
                f"last decision: {r['adaptive_reason']}"
            )
    print(f"wall: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
