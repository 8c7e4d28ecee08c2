"""``purrsight predict --inputs``: inputs/s batched against one input at a time, same run.

    python benchmarks/batch_predict.py --model outputs/demo/bundle --n 240
    python benchmarks/batch_predict.py --model outputs/demo/bundle --n 240 --resume-check

A folder of ``--n`` demo inputs (photo + sound of one cat each, linked from ``--data``'s
JSONL) is written into a temporary folder. In one process, with the predictor loaded once
and torch's threads chosen as the CLI chooses them (the idle cores):

* one at a time: ``Predictor.predict`` on the first ``--single`` inputs, one after the
  other (what a script calling the API per file, or the server with one client, does);
* batched: :func:`purrsight.jobs.predict_batch.predict_batch` on all ``--n`` (batches of
  ``--batch-size``, decoding and encoding of the next batch overlapping the model's work
  on the current one), writing the JSONL.

Both print inputs/s (label path unless ``--mode report``) and the ratio. With
``--resume-check`` the CLI then runs on the folder as a fresh process, is killed
(SIGKILL) once about half of the lines are written, and runs again with ``--resume``: the
check passes when every input has exactly one line, in input order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_folder(data: Path, n: int, folder: Path) -> list[str]:
    """``folder`` with n ``<id>.png`` + ``<id>.wav`` links (demo samples with both)."""
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    both = [r for r in rows if r.get("image") and r.get("audio")]
    if len(both) < n:
        raise SystemExit(f"{data} has {len(both)} samples with image and audio, fewer than {n}")
    folder.mkdir(parents=True, exist_ok=True)
    for row in both[:n]:
        for key in ("image", "audio"):
            source = (data.parent / row[key]).resolve()
            (folder / f"{row['id']}{source.suffix}").symlink_to(source)
    return sorted(r["id"] for r in both[:n])


def audio_seconds(folder: Path) -> float:
    import soundfile as sf

    lengths = [sf.info(str(p)).duration for p in sorted(folder.glob("*.wav"))[:20]]
    return sum(lengths) / len(lengths)


def throughput(args: argparse.Namespace, folder: Path, work: Path) -> dict[str, float]:
    import torch

    from purrsight.data.batch_inputs import discover
    from purrsight.inference.predictor import Predictor
    from purrsight.jobs.predict_batch import predict_batch
    from purrsight.threads import configure

    predictor = Predictor.from_bundle(args.model)
    configure()  # as the CLI: torch's threads from the idle cores
    threads = torch.get_num_threads()
    items = discover(folder)
    predictor.predict(**items[0].request(), mode=args.mode)  # encoders built, caches warm
    single = items[: args.single]
    started = time.perf_counter()
    for item in single:
        predictor.predict(**item.request(), mode=args.mode)
    one_rate = len(single) / (time.perf_counter() - started)
    result = predict_batch(
        predictor, items, work / "batch.jsonl", mode=args.mode, batch_size=args.batch_size
    )
    return {
        "threads": threads,
        "one_at_a_time_per_s": one_rate,
        "one_at_a_time_n": len(single),
        "batched_per_s": result.per_second,
        "batched_n": result.written,
        "errors": result.errors,
    }


def resume_check(args: argparse.Namespace, folder: Path, ids: list[str], work: Path) -> str:
    """Kill the CLI halfway, resume it, and check the lines."""
    script = Path(sys.executable).with_name("purrsight")
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "purrsight.cli"]
    out = work / "killed.jsonl"
    argv = [*base, "predict", "--model", args.model, "--inputs", str(folder), "--out", str(out)]
    argv += ["--mode", args.mode, "--batch-size", str(args.batch_size)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    half = len(ids) // 2
    while proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= half:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    before = out.read_bytes().count(b"\n") if out.exists() else 0
    done = subprocess.run([*argv, "--resume"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"FAIL: --resume exited {done.returncode}: {done.stderr[-500:]}"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    got = [line["id"] for line in lines]
    duplicates = len(got) - len(set(got))
    missing = sorted(set(ids) - set(got))
    in_order = got == ids
    verdict = "PASS" if not duplicates and not missing and in_order else "FAIL"
    return (
        f"{verdict}: killed with {before} of {len(ids)} lines written; after --resume "
        f"{len(got)} lines, {duplicates} duplicates, {len(missing)} missing, "
        f"{'in input order' if in_order else 'NOT in input order'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/demo/bundle")
    parser.add_argument("--data", default="data/demo/all.jsonl", type=Path)
    parser.add_argument("--n", type=int, default=240, help="inputs in the folder")
    parser.add_argument("--single", type=int, default=40, help="inputs timed one at a time")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mode", choices=["labels", "report"], default="labels")
    parser.add_argument("--resume-check", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="purrsight-batch-"))
    try:
        folder = work / "inputs"
        ids = make_folder(args.data, args.n, folder)
        seconds = audio_seconds(folder)
        r = throughput(args, folder, work)
        print(
            f"{args.n} inputs (photo + {seconds:.1f} s sound), {args.mode} path, torch threads "
            f"{r['threads']}, {os.cpu_count()} CPUs"
        )
        print(
            f"one at a time: {r['one_at_a_time_per_s']:.2f} inputs/s ({r['one_at_a_time_n']} inputs)"
        )
        print(
            f"batched:       {r['batched_per_s']:.2f} inputs/s ({r['batched_n']} inputs, batches "
            f"of {args.batch_size}, {r['errors']} errors): "
            f"{r['batched_per_s'] / r['one_at_a_time_per_s']:.2f}x one at a time"
        )
        if args.resume_check:
            print("kill + resume:", resume_check(args, folder, ids, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
