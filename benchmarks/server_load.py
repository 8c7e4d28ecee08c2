"""Load on ``purrsight serve``: many concurrent clients, valid, broken and oversized uploads.

    python benchmarks/server_load.py --model outputs/demo/bundle --seconds 30
    python benchmarks/server_load.py --url http://127.0.0.1:8000 --pid 1234 --api-key K

With ``--model`` the server is started here (a subprocess on 127.0.0.1, a free port, the
given ``--serve-arg`` options); with ``--url`` an already running one is used (``--pid``
for its peak RSS). ``--clients`` async clients (httpx) each send requests back to back for
``--seconds`` (requests in flight then finish): a valid photo, sound or both (the real cat
photo ``skimage.data.chelsea()`` if scikit-image is there, else a generated picture; a
generated 1.5 s sound), random bytes named .png / .wav (422), or a file one byte over the
server's upload limit (413), in proportions ``--mix valid,broken,oversized``.

A 503 (queue full, or no answer in the request time) is retried after its Retry-After, as a
client should; retries are counted and the request's latency runs from its first attempt to
its final answer. Reports requests/s (final answers), p50/p95 latency (all, valid), counts
of final statuses, 503 retries, and the server's peak RSS (VmHWM). Acceptance, exit code 0
only if met: no final 5xx and every valid request answered 200.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import statistics
import sys
import time
import wave
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
MAX_RETRIES = 60


def cat_photo() -> bytes:
    from PIL import Image

    try:
        from skimage.data import chelsea

        picture = Image.fromarray(chelsea())
    except ImportError:
        y, x = np.mgrid[0:240, 0:320]
        picture = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cat_sound(seconds: float = 1.5, rate: int = 16000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    pitch = 550 + 150 * np.sin(2 * np.pi * 1.5 * t)  # a rising-falling "meow"
    samples = 0.4 * np.sin(2 * np.pi * np.cumsum(pitch) / rate) * np.hanning(len(t))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((samples * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def payloads(max_upload: int, rng: random.Random) -> dict[str, list[list[tuple]]]:
    """{kind: [multipart parts lists]} for kind valid / broken / oversized."""
    photo, sound = cat_photo(), cat_sound()
    noise = bytes(rng.getrandbits(8) for _ in range(4096))
    big = b"\x89PNG" + bytes(max_upload - 3)
    return {
        "valid": [
            [("image", ("cat.jpg", photo))],
            [("audio", ("meow.wav", sound))],
            [("image", ("cat.jpg", photo)), ("audio", ("meow.wav", sound))],
        ],
        "broken": [
            [("image", ("cat.png", noise))],
            [("audio", ("meow.wav", noise))],
            [("image", (None, "/etc/passwd"))],
        ],
        "oversized": [[("image", ("huge.png", big))]],
    }


async def client(
    http: httpx.AsyncClient,
    url: str,
    deadline: float,
    plan: dict,
    mix: list[float],
    mode: str,
    rng: random.Random,
    results: list,
) -> None:
    kinds = ["valid", "broken", "oversized"]
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights=mix)[0]
        parts = rng.choice(plan[kind]) + [("mode", (None, mode))]
        started, retries, status = time.monotonic(), 0, None
        try:
            while True:
                try:
                    response = await http.post(url, files=parts)
                    status = response.status_code
                except httpx.HTTPError as err:  # a dropped connection is a failure, counted
                    status = f"error:{type(err).__name__}"
                    break
                if status != 503 or retries >= MAX_RETRIES:
                    break
                retries += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        except asyncio.CancelledError:  # still unanswered when the drain time ran out
            results.append((kind, "unfinished", time.monotonic() - started, retries))
            raise
        results.append((kind, status, time.monotonic() - started, retries))


async def run_load(url, api_key, clients, seconds, drain, mix, mode, seed) -> tuple[list, float]:
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, timeout=300.0, limits=limits) as http:
        health = (await http.get(f"{url}/healthz")).json()
        rng = random.Random(seed)
        plan = payloads(health["limits"]["max_upload_bytes"] + 1, rng)
        results: list = []
        started = time.monotonic()
        deadline = started + seconds
        tasks = [
            asyncio.ensure_future(
                client(
                    http,
                    f"{url}/v1/analyze",
                    deadline,
                    plan,
                    mix,
                    mode,
                    random.Random(seed + i),
                    results,
                )
            )
            for i in range(clients)
        ]
        _, pending = await asyncio.wait(tasks, timeout=seconds + drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return results, time.monotonic() - started


def peak_rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def summarize(results: list, elapsed: float, rss: float | None) -> dict:
    def pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)

    latencies = [r[2] for r in results]
    valid = [r for r in results if r[0] == "valid"]
    statuses = Counter(str(r[1]) for r in results)
    by_kind = {
        kind: dict(Counter(str(r[1]) for r in results if r[0] == kind))
        for kind in ("valid", "broken", "oversized")
    }
    final_5xx = sum(n for s, n in statuses.items() if s[0] == "5" or s.startswith("error"))
    return {
        "requests": len(results),
        "seconds": round(elapsed, 1),
        "requests_per_s": round(len(results) / elapsed, 2),
        "latency_p50_s": pct(latencies, 50),
        "latency_p95_s": pct(latencies, 95),
        "valid_latency_p50_s": pct([r[2] for r in valid], 50),
        "valid_latency_p95_s": pct([r[2] for r in valid], 95),
        "statuses": dict(statuses),
        "statuses_by_kind": by_kind,
        "retries_after_503": sum(r[3] for r in results),
        "valid_sent": len(valid),
        "valid_answered": sum(1 for r in valid if r[1] == 200),
        "final_5xx_or_errors": final_5xx,
        "server_peak_rss_mib": None if rss is None else round(rss, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="bundle folder: start `purrsight serve` on it here")
    where.add_argument("--url", help="an already running server")
    parser.add_argument("--pid", type=int, default=None, help="with --url: its process id")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0, help="time new requests start")
    parser.add_argument(
        "--drain",
        type=float,
        default=300.0,
        help="then at most this long for requests in flight (unanswered ones count as failed)",
    )
    parser.add_argument("--mix", default="0.6,0.25,0.15", help="valid,broken,oversized weights")
    parser.add_argument("--mode", choices=["labels", "report"], default="labels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="extra `purrsight serve` option (repeat), e.g. --serve-arg=--max-upload-mb=2",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args(argv)
    mix = [float(x) for x in args.mix.split(",")]
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        parser.error("--mix needs three non-negative weights: valid,broken,oversized")

    # A `timeout` or Ctrl+C still stops the server this script started (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = None
    url, pid = args.url, args.pid
    if args.model:
        from server_fixture import ServerProcess

        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"server_load_{os.getpid()}.log"
        extra = args.serve_arg or ["--max-upload-mb=2", "--max-request-mb=6"]
        server = ServerProcess(Path(args.model), log, *extra, api_key=args.api_key)
        server.wait_ready()
        url, pid = server.url, server.pid
    try:
        results, elapsed = asyncio.run(
            run_load(
                url, args.api_key, args.clients, args.seconds, args.drain, mix, args.mode, args.seed
            )
        )
        summary = summarize(results, elapsed, peak_rss_mib(pid))
    finally:
        if server is not None:
            server.stop()
    summary.update(clients=args.clients, mode=args.mode, mix=mix)
    ok = summary["final_5xx_or_errors"] == 0 and summary["valid_answered"] == summary["valid_sent"]
    summary["acceptance"] = "pass" if ok else "FAIL"
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['requests']} requests in {summary['seconds']} s from {args.clients} clients "
            f"({args.mode}): {summary['requests_per_s']} req/s\n"
            f"latency p50 {summary['latency_p50_s']} s, p95 {summary['latency_p95_s']} s "
            f"(valid: p50 {summary['valid_latency_p50_s']} s, p95 {summary['valid_latency_p95_s']} s)\n"
            f"final statuses {summary['statuses']} by kind {summary['statuses_by_kind']}\n"
            f"503 retries {summary['retries_after_503']}; valid answered "
            f"{summary['valid_answered']}/{summary['valid_sent']}; 5xx/errors "
            f"{summary['final_5xx_or_errors']}; server peak RSS {summary['server_peak_rss_mib']} MiB\n"
            f"acceptance: {summary['acceptance']}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
