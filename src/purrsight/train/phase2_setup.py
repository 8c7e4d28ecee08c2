"""Phase 2 set-up: every cheap check before anything slow, then the aligned features.

The checks resolve the LLM folder, the Phase 1 aligner (glob → newest), the resume
checkpoint and the data files, each failing with one line naming the key. Then one pass
through the frozen encoders and aligner heads gives all Phase 2 needs from them.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from purrsight.config import Config, ConfigError
from purrsight.data.bad_samples import BadSamples, read_samples, screen_media
from purrsight.data.manifest import ManifestError, Sample
from purrsight.features import FeatureSource
from purrsight.features.aligned import AlignedFeatures
from purrsight.models.llm import resolve_llm_folder
from purrsight.precision import require_possible, training_device_type
from purrsight.train.checkpointing import (
    file_sha256,
    read_checkpoint,
    resolve_aligner,
    resolve_resume,
    restart_checkpoint,
)
from purrsight.train.distributed import (  # noqa: F401 - re-exported for phase2.py
    is_rank_zero,
    process_rank,
    restart_count,
    world_size,
)

log = logging.getLogger(__name__)

# Config keys that decide the shapes of what a checkpoint holds: resuming with other
# values cannot work, so it is refused up front with the key's name.
MODEL_KEYS = (
    "llm_model_name",
    "lora_r",
    "lora_target_modules",
    "num_soft_tokens",
    "projector_hidden_dim",
)


@dataclass
class RunPlan:
    """Everything the cheap checks resolved."""

    llm_folder: Path
    aligner_path: Path
    resume_path: Path | None
    train_path: Path
    val_path: Path | None


# ----------------------------------------------------------------------------- checks


def log_path(output_dir: Path) -> Path:
    """``logs/training.log``; other DDP ranks get ``logs/training.rank<k>.log`` (two
    processes appending to one file would interleave their lines)."""
    rank = process_rank()
    return output_dir / "logs" / ("training.log" if rank == 0 else f"training.rank{rank}.log")


def plan_run(config: Config, config_path: str | None, resume: str | None) -> RunPlan:
    """Resolve and check every path before anything slow happens.

    Raises:
        ConfigError: one line naming the key (missing LLM folder, no aligner, bad resume
            checkpoint, missing data, precision the machine cannot do).
    """
    try:
        llm_folder = resolve_llm_folder(config.llm_model_name)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    require_possible(config.precision, training_device_type())
    checkpoint_dir = Path(config.output_dir) / "checkpoints"
    restarts = restart_count()
    if resume is None and restarts:
        # A launcher restarted this job (torchrun MAX_RESTARTS, a SLURM requeue): continue
        # where it stopped instead of starting over.
        found = restart_checkpoint(checkpoint_dir)
        if found:
            step = read_checkpoint(found).get("global_step")
            log.warning("restart %d of this job: resuming from %s (step %s)", restarts, found, step)
        else:
            log.warning(
                "restart %d of this job: no checkpoint written yet, starting over", restarts
            )
        resume = str(found) if found else None
    resume_path = resolve_resume(resume, checkpoint_dir)
    aligner_path = aligner_for(config, config_path, resume_path)
    data_dir = Path(config.data_dir)
    train_path, val_path = data_dir / "train.jsonl", data_dir / "val.jsonl"
    if not train_path.is_file():
        raise ConfigError(
            f"data_dir: {train_path} not found (the instruction JSONL; `purrsight data demo "
            f"--out {data_dir}` writes a demo set)"
        )
    return RunPlan(
        llm_folder, aligner_path, resume_path, train_path, val_path if val_path.is_file() else None
    )


def aligner_for(config: Config, config_path: str | None, resume_path: Path | None) -> Path:
    """The aligner to use: the glob's newest match, or, when resuming, the one the
    checkpoint was trained with (the glob may now find a newer Phase 1 run)."""
    if resume_path is None:
        path = resolve_aligner(config.phase1_checkpoint_path, config_path)
        log.info("Phase 1 aligner: %s", path)
        return path
    meta = read_checkpoint(resume_path)["hyper_parameters"]
    check_same_model(config, meta["config"], resume_path)
    recorded = Path(meta["aligner"]["path"])
    if not recorded.is_file() or file_sha256(recorded) != meta["aligner"]["sha256"]:
        raise ConfigError(
            f"--resume {resume_path}: it was trained with the aligner {recorded} "
            f"(sha256 {meta['aligner']['sha256'][:12]}…), which is gone or changed; "
            "resume needs that aligner"
        )
    log.info("Phase 1 aligner (from the checkpoint): %s", recorded)
    return recorded


def check_same_model(config: Config, saved: dict[str, Any], resume_path: Path) -> None:
    now = config.model_dump()
    for key in MODEL_KEYS:
        if saved.get(key) != now[key]:
            raise ConfigError(
                f"--resume {resume_path}: {key} was {saved.get(key)!r} when it was trained, "
                f"the config now says {now[key]!r}"
            )
    changed = sorted(k for k in now if k not in MODEL_KEYS and saved.get(k) != now[k])
    if changed:
        log.warning("resuming with changed config keys: %s", ", ".join(changed))


# ----------------------------------------------------------------------------- features


def encode_aligned_splits(
    config: Config,
    splits: Sequence[tuple[str, Sequence[Sample]]],
    aligner: Any,
    aligner_info: dict[str, Any],
    modalities: Sequence[str],
) -> list[AlignedFeatures | None]:
    """Aligned features of each named split (None for an empty split), from the config's
    :class:`~purrsight.features.FeatureSource` (its feature cache when ``feature_cache``
    is on); the encoders are freed afterwards."""
    source = FeatureSource.from_config(config, modalities)
    out = source.aligned_splits(splits, aligner, aligner_info)
    source.log_use()
    source.release()  # frozen and no longer needed: give their memory to the LLM
    gc.collect()
    return out


def aligned_splits(config: Config, plan: RunPlan, bad: BadSamples | None = None):
    """Read the splits and run them once through the frozen encoders + aligner heads (or
    take them from the feature cache). ``bad`` (default: ``config.on_bad_sample``) decides
    about, and records, the samples that cannot be used, before anything is sharded.
    Returns (train samples, train features, val samples, val features, modalities, info)."""
    from purrsight.models.aligner import load_aligner
    from purrsight.train.phase2_data import PHASE2_MODALITIES, used_modalities

    bad = bad if bad is not None else BadSamples(config.on_bad_sample)
    train, val = [
        screen_media(
            read_samples(path, config.labels, bad, name),
            PHASE2_MODALITIES,
            config.media,
            bad,
            name,
            need_one=True,
        )
        if path
        else []
        for name, path in (("train", plan.train_path), ("val", plan.val_path))
    ]
    if bad.skipped:
        log.warning("%s: %s", bad.summary(), ", ".join(s.source for s in bad.skipped[:5]))
    if not train:
        raise ManifestError(
            f"{plan.train_path}: no usable training sample ({len(bad.skipped)} skipped as bad)",
            "file",
        )
    modalities = used_modalities([train, val])
    aligner, info = load_aligner(plan.aligner_path)
    missing = [m for m in modalities if m not in aligner.heads]
    if missing:
        raise ConfigError(f"phase1_checkpoint_path: {plan.aligner_path} has no head for {missing}")
    train_feats, val_feats = encode_aligned_splits(
        config, [("train", train), ("val", val)], aligner, info, modalities
    )
    info = {**info, "embed_dim": aligner.embed_dim}
    return train, train_feats, val, val_feats, modalities, info
