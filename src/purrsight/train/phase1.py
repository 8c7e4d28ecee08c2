"""Phase 1: align the frozen encoders' features in one shared space.

    purrsight train phase1 --config config/demo.yaml             # the embedded default
    purrsight train phase1 --config config/demo.yaml --set phase1.epochs=2   # a smoke run

Writes ``<phase1.output_dir>/<run>/aligner.pt`` + ``aligner.json`` and logs to MLflow.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from purrsight.config import Config, dump_config, to_flat_dict
from purrsight.data.bad_samples import SKIPPED_FILE, BadSamples, read_samples, screen_media
from purrsight.data.manifest import Sample
from purrsight.features import FeatureSource
from purrsight.features.raw import FeatureTable
from purrsight.models.aligner import Aligner, save_aligner
from purrsight.report import label_description
from purrsight.train.phase1_module import AlignmentModule, EvalSet, FeatureDataset
from purrsight.train.tracking import make_logger, ui_command
from purrsight.vocabulary import MEDIA_MODALITIES

log = logging.getLogger(__name__)
MEDIA = MEDIA_MODALITIES  # the media Phase 1 decodes (video is not trained on)


@dataclass
class Phase1Result:
    run_dir: Path
    aligner_path: Path
    metrics: dict[str, float]
    seconds: float
    timings: dict[str, float]


def data_hash(*paths: Path) -> str:
    """sha256 over the JSONL files (first 16 hex), recorded with the aligner."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _label_index(samples: list[Sample], labels: list[str]) -> torch.Tensor:
    return torch.tensor([labels.index(s.label) if s.label in labels else -1 for s in samples])


def _encode_everything(
    config: Config, train: list[Sample], val: list[Sample]
) -> tuple[FeatureTable, FeatureTable, torch.Tensor, dict[str, str], dict[str, int]]:
    """One pass through the frozen encoders (or the feature cache): train and val features,
    label-description text features [k, d_text], encoder identities and feature sizes."""
    # Only the perceptual modalities the training data has: a head trained on no samples
    # would be saved as if it were aligned (audio-only or image-only data sets).
    present = [m for m in MEDIA if any(getattr(s, m) for s in train)]
    source = FeatureSource.from_config(config, (*present, "text"))
    train_table = source.raw(train, "train")
    val_table = source.raw(val, "val")
    label_feats = source.texts([label_description(lb) for lb in config.labels])
    source.log_use()
    identities = {m: source.identity(m) for m in source.modalities}
    dims = {m: int(f.shape[1]) for m, f in train_table.features.items()}
    return train_table, val_table, label_feats, identities, dims


def _quiet_transformers() -> None:
    """No per-load 'Loading weights' progress bars in job logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def run_phase1(config: Config, config_path: str | None = None) -> Phase1Result:
    """Train the aligner as ``config`` says and save it; returns where and how well."""
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from purrsight.threads import configure as adapt_threads
    from purrsight.train import cpu_threads, route_lightning_logs_to_root
    from purrsight.train.distributed import is_rank_zero, world_size

    route_lightning_logs_to_root()
    adapt_threads()  # the encoders' threads (the CLI's decision, or this process's own)
    _quiet_transformers()
    started = time.perf_counter()
    cfg = config.phase1
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data_dir = Path(cfg.data_dir)
    train_path, val_path = data_dir / "train.jsonl", data_dir / "val.jsonl"
    bad = BadSamples(config.on_bad_sample)
    train, val = [
        screen_media(read_samples(path, config.labels, bad, name), MEDIA, config.media, bad, name)
        for name, path in (("train", train_path), ("val", val_path))
    ]
    if bad.skipped:
        log.warning("%s: %s", bad.summary(), ", ".join(s.source for s in bad.skipped[:5]))
    log.info("Phase 1 data: %d train, %d val samples from %s", len(train), len(val), data_dir)

    t0 = time.perf_counter()
    train_table, val_table, label_feats, identities, dims = _encode_everything(config, train, val)
    encode_seconds = time.perf_counter() - t0
    log.info("Encoded %d samples once in %.1f s", len(train) + len(val), encode_seconds)

    # Re-seeded so the heads' initialisation does not depend on whether the encoders were
    # loaded (building one draws random numbers) or all features came from the cache.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    aligner = Aligner(
        dims, cfg.embed_dim, cfg.head_hidden_dim, cfg.head_dropout, cfg.temperature_init
    )
    eval_set = EvalSet(
        val_table, [s.text for s in val], _label_index(val, config.labels), label_feats
    )
    loader = DataLoader(
        FeatureDataset(train_table), batch_size=cfg.batch_size, shuffle=True, drop_last=True
    )
    world, local = world_size()
    # Under DDP each process gets 1/world of the samples (Lightning's DistributedSampler).
    batches = -(-len(train) // world) // cfg.batch_size
    if batches == 0:
        raise ValueError(
            f"phase1.batch_size={cfg.batch_size} is larger than the {len(train)} training "
            f"samples{f' shared by {world} processes' if world > 1 else ''}"
        )
    total_steps = batches * cfg.epochs
    module = AlignmentModule(aligner, cfg, total_steps, eval_set)

    run_name = cfg.run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
    logger = (  # rank 0 only: one MLflow run per job
        make_logger(config.mlflow.tracking_uri, config.mlflow.experiment_name, f"phase1-{run_name}")
        if config.mlflow.enabled and is_rank_zero()
        else False
    )
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator="cpu",
        devices=local if world > 1 else 1,
        num_nodes=world // local if world > 1 else 1,
        strategy=DDPStrategy(find_unused_parameters=False) if world > 1 else "auto",
        logger=logger,
        enable_checkpointing=False,
        log_every_n_steps=max(1, min(10, batches)),
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    t0 = time.perf_counter()
    with cpu_threads(1):
        trainer.fit(module, loader)
    train_seconds = time.perf_counter() - t0
    # The run folder is rank 0's (its clock named it): every process learns it before
    # building a path from it. All processes call the broadcast (a collective).
    run_name = trainer.strategy.broadcast(run_name, src=0)
    run_dir = Path(cfg.output_dir) / run_name

    metrics = module.evaluate(eval_set)
    meta = {
        "encoders": identities,
        "labels": config.labels,
        "data_hash": data_hash(train_path, val_path),
        "data_dir": str(data_dir),
        "run_name": run_name,
        "val_metrics": metrics,
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    aligner_path = run_dir / "aligner.pt"
    if trainer.is_global_zero:  # one writer; no collective inside
        aligner_path = save_aligner(run_dir, aligner, meta)
        dump_config(config, run_dir / "config.yaml")
        if bad.policy == "skip":
            bad.write(run_dir / SKIPPED_FILE)
    trainer.strategy.barrier("aligner saved")  # the others return once the files exist
    if logger:
        _log_run(logger, config, run_dir, metrics, len(bad.skipped))
        log.info(
            "MLflow run %s; view with: %s", logger.run_id, ui_command(config.mlflow.tracking_uri)
        )
    seconds = time.perf_counter() - started
    timings = {"encode": encode_seconds, "train": train_seconds}
    return Phase1Result(run_dir, aligner_path, metrics, seconds, timings)


def _log_run(
    logger, config: Config, run_dir: Path, metrics: dict[str, float], skipped: int
) -> None:
    """Flattened config as params, final val metrics, the skipped-sample count, and the
    run's files (``skipped_samples.jsonl`` under ``on_bad_sample: skip``) as artifacts."""
    logger.log_hyperparams(to_flat_dict(config))
    logger.log_metrics({f"final_{k}": v for k, v in metrics.items()})
    logger.log_metrics({"skipped_samples": float(skipped)})
    for name in ("config.yaml", "aligner.json", SKIPPED_FILE):
        if (run_dir / name).is_file():
            logger.experiment.log_artifact(logger.run_id, str(run_dir / name))
    logger.finalize("success")
