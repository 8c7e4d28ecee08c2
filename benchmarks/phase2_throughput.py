"""Phase 2 training throughput: the guide's design vs Purr-Sight's default, same data and model.

    python benchmarks/phase2_throughput.py [--json] [--config config/demo.yaml]

One command, one run: it trains a fixed number of steps with each variant, each in a fresh
subprocess so that each variant's peak memory is its own (VmHWM, the peak resident set
of that process from start to end: weights, encoders, activations, allocator slack).

* ``baseline`` — the guide literally: the frozen encoders and aligner run on the real
  media in every step, samples are tokenised on the fly and padded to
  ``max_text_length`` (512), fp32, the full [b, s, v] logits and Hugging Face's loss.
* ``ours`` — Purr-Sight's default: aligned features computed once (from the feature cache
  when it is there, so the encoders are never loaded: ``feature_cache: true``), batches
  padded to the longest rounded up to ``pad_to_multiple_of`` (or length-grouped, or
  packed, when the config's ``group_by_length`` / ``packing`` say so), the config's
  precision as training resolves it on this CPU (``auto``: bf16 autocast with the frozen
  linears held in bf16 where the CPU has avx512_bf16/amx, else fp32), loss at target
  positions only in chunks, LoRA dropout from 16-bit draws shared by the adapters that
  read one input. Gradient checkpointing is off
  in both variants (like for like; ``--checkpointing`` turns it on for ``ours``, as
  ``config/demo.yaml`` does to keep the demo's training under 3 GB).

Same samples (the first ``--samples`` of ``<data_dir>/train.jsonl``), same LLM (the
config's; the embedded SmolLM2-135M by default), same LoRA and projector set-up, AdamW,
gradient clipping 1.0, the config's thread settings. Each variant first runs ``--warmup``
steps, then one step per batch, so both train on exactly the same samples while timed.
Features for ``ours`` are made before its process starts (by a separate ``prepare``
process: one encoder pass, or the feature cache), and that one-off cost is reported as
``prepare_s``, not counted in throughput.

Throughput: samples/s and non-pad tokens/s (tokens where ``attention_mask`` is 1).
``speedup`` = ours tokens/s ÷ baseline tokens/s. ``--json`` prints only
``{"baseline": {...}, "ours": {...}, "speedup": x}``.
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

VARIANTS = ("baseline", "ours")


# ----------------------------------------------------------------------------- set-up


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Config, samples, modalities, aligner (trained if one matches the glob, else a fresh
    one: throughput does not depend on its weights)."""
    import torch

    from purrsight.config import load_config
    from purrsight.data.manifest import read_manifest
    from purrsight.train.phase2_data import used_modalities

    overrides = [f"data_dir={args.data_dir}"] if args.data_dir else []
    config = load_config(args.config, overrides + list(args.set or []))
    torch.manual_seed(config.seed)
    samples = read_manifest(Path(config.data_dir) / "train.jsonl", config.labels)[: args.samples]
    modalities = used_modalities([samples])
    aligner, info = _aligner(config, args, modalities)
    return {
        "config": config,
        "samples": samples,
        "modalities": modalities,
        "aligner": aligner,
        "info": info,
    }


def _aligner(config, args, modalities):
    import glob

    from purrsight.models.aligner import Aligner, load_aligner
    from purrsight.models.encoders import build_encoder

    pattern = args.aligner or config.phase1_checkpoint_path
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if found:
        return load_aligner(found[-1])
    dims = {m: build_encoder(m, getattr(config.encoders, m)).dim for m in modalities}
    aligner = Aligner(dims, config.phase1.embed_dim, config.phase1.head_hidden_dim)
    return aligner, {"embed_dim": aligner.embed_dim, "untrained": True}


def build_model(config, modalities, embed_dim, gradient_checkpointing: bool):
    """The config's LLM wrapped with LoRA + projectors, in train mode."""
    import torch

    from purrsight.models.llm import load_llm
    from purrsight.models.mm_llm import multimodal_llm_from_config

    llm, tokenizer = load_llm(config.llm_model_name)
    torch.manual_seed(config.seed)
    return multimodal_llm_from_config(
        config,
        llm,
        tokenizer,
        in_dim=embed_dim,
        modalities=modalities,
        gradient_checkpointing=gradient_checkpointing,
    ).train()


def load_encoders(config, modalities):
    """A FeatureSource without the cache, its encoders built now (the guide's design runs
    them on every batch; batches of up to ``batch_size`` samples are one encoder call)."""
    from purrsight.features import FeatureSource

    configs = {m: getattr(config.encoders, m) for m in modalities}
    source = FeatureSource(configs, config.media, batch_size=config.batch_size)
    for modality in modalities:
        source.encoder(modality)
    return source


# ----------------------------------------------------------------------------- features


def features_path(workdir: Path) -> Path:
    return workdir / "aligned.pt"


def cached_features(env: dict[str, Any], workdir: Path):
    """Aligned features through the feature cache when this checkout has it (None if
    not): a full cache loads no encoder at all."""
    try:
        from purrsight.train.phase2_setup import encode_aligned_splits
    except ImportError:
        return None
    config = env["config"]
    if "feature_cache" not in type(config).model_fields:
        return None
    update = {"feature_cache": True}
    if "feature_cache_dir" in type(config).model_fields and os.environ.get("PURRSIGHT_BENCH_CACHE"):
        update["feature_cache_dir"] = os.environ["PURRSIGHT_BENCH_CACHE"]
    config = config.model_copy(update=update)
    (feats,) = encode_aligned_splits(
        config, [("train", env["samples"])], env["aligner"], env["info"], env["modalities"]
    )
    return feats


def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Make ``ours``' aligned features once: fill the feature cache, or (without one) one
    encoder pass saved to ``workdir``."""
    import torch

    env = setup(args)
    started = time.perf_counter()
    feats = cached_features(env, workdir)
    source = "feature cache"
    if feats is None:
        config = env["config"]
        encoders = load_encoders(config, env["modalities"])
        feats = encoders.aligned(env["samples"], env["aligner"], "prepare")
        source = "one encoder pass (no feature cache in this checkout)"
    torch.save(
        {"ids": feats.ids, "features": feats.features, "present": feats.present},
        features_path(workdir),
    )
    return {"prepare_s": time.perf_counter() - started, "feature_source": source}


def load_prepared(env: dict[str, Any], workdir: Path):
    import torch

    from purrsight.features.aligned import AlignedFeatures

    feats = cached_features(env, workdir)  # a cache hit: no encoder is built
    if feats is not None:
        return feats
    saved = torch.load(features_path(workdir), weights_only=True)
    return AlignedFeatures(saved["ids"], saved["features"], saved["present"])


# ----------------------------------------------------------------------------- variants


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from purrsight.data.instruction import IGNORE_INDEX, collate, encode_sample
    from purrsight.models.lean_dropout import use_lean_lora_dropout
    from purrsight.models.mm_llm import position_ids_from_mask

    env = setup(args)
    config, samples = env["config"], env["samples"]
    encoders = load_encoders(config, env["modalities"])
    # The guide's config: gradient_checkpointing false; PEFT's own (float-mask) dropout.
    model = build_model(config, env["modalities"], env["info"]["embed_dim"], False)
    use_lean_lora_dropout(model, lean=False)
    tokenizer = model.tokenizer
    pad_id, max_len = int(tokenizer.pad_token_id), config.max_text_length
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(config.seed))
    chunks = [
        order[i : i + config.batch_size].tolist() for i in range(0, len(samples), config.batch_size)
    ]

    def batch_of(rows: list[int]):
        chosen = [samples[i] for i in rows]
        # The guide's dataset: encoders + aligner on the raw media, every step.
        feats = encoders.aligned(chosen, env["aligner"], "baseline")
        items = [
            encode_sample(s, tokenizer, feats.row(i), config.num_soft_tokens, max_len)
            for i, s in enumerate(chosen)
        ]
        batch = collate(items, pad_id)
        extra = max_len - batch.input_ids.shape[1]  # padding="max_length"
        pad = torch.nn.functional.pad
        batch.input_ids = pad(batch.input_ids, (0, extra), value=pad_id)
        batch.attention_mask = pad(batch.attention_mask, (0, extra), value=0)
        batch.labels = pad(batch.labels, (0, extra), value=IGNORE_INDEX)
        return batch

    def step(batch) -> None:
        # fp32, no autocast; the full logits and Hugging Face's loss.
        embeds = model.embed(
            batch.input_ids, batch.features, batch.present, batch.placeholder_positions
        )
        loss = model.llm(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_from_mask(batch.attention_mask),
            labels=batch.labels,
            use_cache=False,
        ).loss
        loss.backward()

    return train(args, model, chunks, batch_of, step, config)


def run_ours(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    from purrsight.precision import resolve_precision
    from purrsight.train.phase2_data import InstructionDataset, build_loader

    env = setup(args)
    config, samples = env["config"], env["samples"]
    feats = load_prepared(env, workdir)
    # Like for like: no gradient checkpointing, as in the baseline, unless asked for
    # (config/demo.yaml turns it on to keep the demo's training under 3 GB of RSS).
    model = build_model(config, env["modalities"], env["info"]["embed_dim"], args.checkpointing)
    tokenizer = model.tokenizer
    dataset = InstructionDataset(
        samples, feats, tokenizer, config.num_soft_tokens, config.max_text_length
    )
    loader = build_loader(
        dataset,
        config.batch_size,
        int(tokenizer.pad_token_id),
        num_workers=0,
        seed=config.seed,
        train=True,
        group_by_length=config.group_by_length,
        pad_to_multiple_of=config.pad_to_multiple_of,
        packing=config.packing,
    )
    batches = list(loader)  # collate is part of the loader; pre-tokenised, so cheap
    # The dtype training would pick on this CPU (train/phase2.py resolves it the same way).
    precision = resolve_precision(config.precision, "cpu")
    dtype = precision.autocast_dtype

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = model(**batch.model_inputs()).loss
        loss.backward()

    # As training does (train/phase2.py): frozen linears in the autocast dtype, the fp32
    # originals spilled to a file meanwhile.
    with model.frozen_linears_as(dtype, spill_dir=workdir):
        result = train(args, model, list(range(len(batches))), lambda i: batches[i], step, config)
    return {**result, "precision": precision.precision}


def train(args, model, plan, batch_of, step, config) -> dict[str, Any]:
    """``--warmup`` steps, then one timed step per entry of ``plan``."""
    import torch

    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )

    def one(entry) -> tuple[int, int]:
        batch = batch_of(entry)
        step(batch)
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch.num_samples, int(batch.attention_mask.sum())

    for i in range(args.warmup):
        one(plan[i % len(plan)])
    samples = tokens = 0
    started = time.perf_counter()
    for entry in plan:
        n, t = one(entry)
        samples, tokens = samples + n, tokens + t
    seconds = time.perf_counter() - started
    return {
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "step_s": seconds / len(plan),
        "steps": len(plan),
        "samples": samples,
        "tokens": tokens,
    }


# ----------------------------------------------------------------------------- processes


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    if args.variant == "prepare":
        result = prepare(args, workdir)
    elif args.variant == "baseline":
        result = run_baseline(args)
    else:
        result = run_ours(args, workdir)
    result["peak_mb"] = peak_rss_mb()
    result["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result))


def spawn(variant: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result = workdir / f"{variant}.json"
    command = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir)]
    command += ["--result", str(result), "--config", args.config, "--samples", str(args.samples)]
    command += ["--warmup", str(args.warmup)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    for item in args.set or []:
        command += ["--set", item]
    if args.checkpointing:
        command += ["--checkpointing"]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.aligner:
        command += ["--aligner", args.aligner]
    out = None if not args.json else subprocess.DEVNULL
    proc = subprocess.run(
        command, stdout=out, stderr=None if not args.json else subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-2000:]
        raise SystemExit(f"{variant} failed (exit {proc.returncode}){': ' + tail if tail else ''}")
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--config", default="config/demo.yaml")
    parser.add_argument("--data-dir", default=None, help="default: the config's data_dir")
    parser.add_argument("--aligner", default=None, help="default: the config's glob")
    parser.add_argument("--samples", type=int, default=24, help="3 batches of 8")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--checkpointing",
        action="store_true",
        help="ours with gradient checkpointing (the baseline never has it)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="config override for both variants, e.g. gradient_checkpointing=false",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in both variants (default: torch's)",
    )
    parser.add_argument("--variant", choices=("prepare", *VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="phase2-bench-") as tmp:
        workdir = Path(tmp)
        prepared = spawn("prepare", args, workdir)
        results = {v: spawn(v, args, workdir) for v in VARIANTS}
    results["ours"]["prepare_s"] = prepared["prepare_s"]
    results["ours"]["feature_source"] = prepared["feature_source"]
    speedup = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    if args.json:
        keys = ("samples_per_s", "tokens_per_s", "peak_mb")
        print(
            json.dumps(
                {
                    **{v: {k: round(results[v][k], 2) for k in keys} for v in VARIANTS},
                    "speedup": round(speedup, 2),
                }
            )
        )
        return 0
    print(f"{'variant':<10}{'samples/s':>11}{'tokens/s':>10}{'s/step':>8}{'peak MB':>9}")
    for v in VARIANTS:
        r = results[v]
        print(
            f"{v:<10}{r['samples_per_s']:>11.2f}{r['tokens_per_s']:>10.1f}{r['step_s']:>8.2f}{r['peak_mb']:>9.0f}"
        )
    print(f"speedup (tokens/s): {speedup:.2f}x")
    print(f"ours' features: {prepared['feature_source']}, {prepared['prepare_s']:.1f} s once")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
