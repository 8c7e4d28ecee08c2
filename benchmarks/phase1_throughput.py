"""Phase 1 throughput: the frozen stages (encode + align) on the demo data with the real
embedded encoders, without the feature cache, with a cold cache and with a warm one.

    python benchmarks/phase1_throughput.py                 # data/demo, config/demo.yaml
    python benchmarks/phase1_throughput.py --json          # one JSON object on stdout
    python benchmarks/phase1_throughput.py --data /path/to/demo --threads 1

The unit of work is what the two training phases need per sample: the encoder features of
image, audio and caption (Phase 1 trains the aligner on them) and the aligned image and
audio vectors (Phase 2 trains on them). Each mode runs in the same process on the same
samples; every timing includes loading the encoders where the mode loads them and hashing
the media files where it uses the cache (the in-process hash memo is cleared first, as in
a fresh run). Hardware: the 2-core CPU of this project takes a few minutes for the demo's
420 samples without the cache and seconds with a warm one.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from purrsight.config import load_config  # noqa: E402
from purrsight.data.manifest import read_manifest  # noqa: E402
from purrsight.features import FeatureSource  # noqa: E402
from purrsight.features.aligned import apply_head  # noqa: E402
from purrsight.features.cache import FeatureCache  # noqa: E402
from purrsight.models.aligner import Aligner, load_aligner  # noqa: E402
from purrsight.models.encoders import _file_hash  # noqa: E402

MODALITIES = ("image", "audio", "text")
ALIGNED = ("image", "audio")


def _samples(data_dir: Path):
    path = data_dir / "all.jsonl"
    if not path.is_file():
        sys.exit(f"{path} not found: generate it with `purrsight data demo --out {data_dir}`")
    return read_manifest(path)


def _aligner(pattern: str | None, dims: dict[str, int]) -> tuple[Aligner, str]:
    """The newest trained aligner the glob finds, else a seeded random one (same cost)."""
    matches = sorted(glob.glob(pattern), key=lambda p: Path(p).stat().st_mtime) if pattern else []
    if matches:
        aligner, info = load_aligner(matches[-1])
        if all(aligner.input_dims.get(m) == d for m, d in dims.items()):
            return aligner, matches[-1]
    torch.manual_seed(0)
    return Aligner(dims, embed_dim=512, hidden_dim=1024), "random (no trained aligner found)"


def run_plain(samples, config, aligner) -> tuple[dict, dict]:
    """No cache: build the encoders, encode everything, align image and audio."""
    t0 = time.perf_counter()
    source = FeatureSource.from_config(config, MODALITIES, cache=False)
    for m in MODALITIES:
        source.encoder(m)
    load = time.perf_counter() - t0
    table = source.raw(samples)
    # The heads on the table just encoded (source.aligned would encode it again).
    aligned = {m: apply_head(aligner.heads[m], table.features[m]) for m in ALIGNED}
    seconds = time.perf_counter() - t0
    source.release()
    out = {**{f"encoder_{m}": table.features[m] for m in MODALITIES}}
    out.update({f"aligned_{m}": aligned[m] * table.present[m][:, None] for m in ALIGNED})
    return {"seconds": seconds, "load_seconds": load}, out


def run_cached(samples, config, aligner, cache_dir: Path) -> tuple[dict, dict]:
    """Through the feature cache: encoder level for all three, aligned level for two."""
    _file_hash.cache_clear()  # a fresh process hashes the encoder weights again
    t0 = time.perf_counter()
    configs = {m: getattr(config.encoders, m) for m in MODALITIES}
    batch = config.phase1.encode_batch_size
    source = FeatureSource(configs, config.media, FeatureCache(cache_dir), batch)
    table = source.raw(samples)
    out = {f"encoder_{m}": table.features[m] for m in MODALITIES}
    aligned = source.aligned(samples, aligner, "align", ALIGNED)
    out.update({f"aligned_{m}": aligned.features[m] for m in ALIGNED})
    seconds = time.perf_counter() - t0
    usage = source.cache_usage()
    stats = {
        "seconds": seconds,
        "encoders_loaded": usage["encoders_loaded"],
        "encoder_level": usage["encoder"],
        "aligned_level": usage["aligned"],
        "entries": usage["entries"],
        "size_mb": usage["size_mb"],
    }
    return stats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    parser.add_argument("--data", default=None, help="demo data folder (default: phase1.data_dir)")
    parser.add_argument("--aligner", default=None, help="aligner.pt glob (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = load_config(args.config)
    samples = _samples(Path(args.data or config.phase1.data_dir))
    probe = FeatureSource.from_config(config, MODALITIES, cache=False)
    dims = {m: probe.encoder(m).dim for m in MODALITIES}
    probe.release()
    aligner, aligner_source = _aligner(args.aligner or config.phase1_checkpoint_path, dims)

    plain, reference = run_plain(samples, config, aligner)
    with tempfile.TemporaryDirectory(prefix="purrsight-cache-") as tmp:
        cold, _ = run_cached(samples, config, aligner, Path(tmp))
        warm, got = run_cached(samples, config, aligner, Path(tmp))
    diff = max(float((got[k] - reference[k]).abs().max()) for k in reference)

    n = len(samples)
    for stage in (plain, cold, warm):
        stage["samples_per_s"] = round(n / stage["seconds"], 2)
        stage["seconds"] = round(stage["seconds"], 2)
    plain["load_seconds"] = round(plain["load_seconds"], 2)
    result = {
        "samples": n,
        "threads": torch.get_num_threads(),
        "aligner": aligner_source,
        "no_cache": plain,
        "cold_cache": cold,
        "warm_cache": warm,
        "speedup_warm_vs_no_cache": round(warm["samples_per_s"] / plain["samples_per_s"], 1),
        "cold_vs_no_cache": round(cold["samples_per_s"] / plain["samples_per_s"], 2),
        "max_abs_diff_warm_vs_no_cache": diff,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{n} samples, {result['threads']} threads, aligner: {aligner_source}")
    for name in ("no_cache", "cold_cache", "warm_cache"):
        stage = result[name]
        print(f"  {name:10s} {stage['seconds']:8.2f} s  {stage['samples_per_s']:9.2f} samples/s")
    print(
        f"warm cache vs no cache: {result['speedup_warm_vs_no_cache']}x; cold cache costs "
        f"{result['cold_vs_no_cache']}x the throughput of no cache; max |diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
