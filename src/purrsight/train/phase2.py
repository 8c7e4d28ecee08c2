"""Phase 2: train per-modality projectors + LoRA on the LLM, from a frozen Phase 1 aligner.

    python train_phase2.py --config config/train_config.yaml             # the guide's Qwen2.5 run
    python train_phase2.py --config config/train_config.yaml --resume    # continue from last.ckpt
    purrsight train phase2 --config config/demo.yaml                     # embedded SmolLM2, offline
    purrsight train phase2 --config config/demo.yaml --set max_steps=10  # a smoke run
    torchrun --nproc_per_node=4 train_phase2.py --config config/train_config.yaml   # DDP

Hardware: the demo config on 2 CPU cores trains SmolLM2-135M at a few hundred tokens/s;
the guide quotes ~500 ms per batch of 8 for Qwen2.5-0.5B on an RTX 4090.

Order of work: every cheap check first (LLM folder, aligner, resume checkpoint, data
files) so a wrong path stops the run at once; then one pass through the frozen encoders
and aligner heads (the aligned features are all Phase 2 needs from them, so the encoders
are freed), then the LLM, then Lightning. Writes, under ``output_dir``::

    checkpoints/phase2-epoch=01-train_loss=2.3456.ckpt   top-k by epoch train loss
    checkpoints/last.ckpt                                every epoch end
    checkpoints/emergency-step=<n>.ckpt                  on an error, SIGTERM or Ctrl+C
    logs/training.log, logs/config.yaml, logs/preview.json
    logs/skipped_samples.jsonl                           on_bad_sample: skip (every one)

and one MLflow run (params: the flattened config; metrics: train_loss, lr,
tokens_per_second, samples_per_second, val_loss, nonfinite_steps, skipped_samples;
artifacts: config.yaml, training.log, skipped_samples.jsonl). ``--resume`` continues the
checkpoint's run when it is in the configured store.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch

from purrsight.config import Config, dump_config, to_flat_dict
from purrsight.data.bad_samples import SKIPPED_FILE, BadSamples
from purrsight.data.manifest import Sample
from purrsight.files import atomic_write
from purrsight.memory import release_freed_memory
from purrsight.models.weight_spill import remove_stale_spills
from purrsight.precision import with_resolved_precision
from purrsight.threads import configure as adapt_threads
from purrsight.train.checkpointing import (
    EPOCH_FILENAME,
    LAST_NAME,
    archive_previous_run,
    file_sha256,
    remove_stale_temps,
)
from purrsight.train.logs import training_log
from purrsight.train.memory_callback import ReleaseFreedMemory
from purrsight.train.phase2_setup import (
    RunPlan,
    aligned_splits,
    is_rank_zero,
    log_path,
    plan_run,
    process_rank,
    restart_count,
    world_size,
)

log = logging.getLogger(__name__)

DEBUG_MAX_STEPS = 5
DEBUG_LIMIT_BATCHES = 5


class TrainingInterrupted(RuntimeError):
    """Training stopped by an error or a signal; the message is one line naming the cause
    and the emergency checkpoint. ``exit_code``: 143 SIGTERM, 130 SIGINT, 1 an error."""

    def __init__(self, message: str, exit_code: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.checkpoint = checkpoint


@dataclass
class Phase2Result:
    """What a finished run produced (the trained model stays in memory for the caller)."""

    output_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    aligner_path: Path
    modalities: list[str]
    history: list[dict[str, float]]
    """One entry per training batch: step (after it), loss, lr, tokens, samples, seconds."""
    metrics: dict[str, float]
    timings: dict[str, float]
    seconds: float
    model: Any = None
    """The trained :class:`~purrsight.models.mm_llm.MultimodalLLM` (on CPU)."""
    tokenizer: Any = None
    mlflow_run_id: str | None = None
    previews: list[dict[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- run


def _effective(config: Config, debug: bool) -> Config:
    """``--debug`` shortens the run: at most 5 optimizer steps."""
    if not debug:
        return config
    steps = DEBUG_MAX_STEPS if config.max_steps < 0 else min(config.max_steps, DEBUG_MAX_STEPS)
    return config.model_copy(update={"max_steps": steps, "log_every_n_steps": 1})


def total_steps(batches_per_epoch: int, config: Config) -> int:
    """Optimizer steps the run will make: the LR schedule decays to 0 there."""
    per_epoch = max(1, -(-batches_per_epoch // config.accumulate_grad_batches))
    planned = per_epoch * config.num_epochs
    return min(planned, config.max_steps) if config.max_steps > 0 else planned


def run_phase2(
    config: Config,
    config_path: str | None = None,
    *,
    resume: str | None = None,
    debug: bool = False,
    callbacks: Sequence[Any] = (),
) -> Phase2Result:
    """Train Phase 2 as ``config`` says.

    Args:
        resume: ``"last"`` (``<output_dir>/checkpoints/last.ckpt``) or a checkpoint path.
        debug: anomaly detection, at most 5 steps of at most 5 batches per epoch.
        callbacks: extra Lightning callbacks.
    Raises:
        ConfigError: a bad path or setting, before anything slow.
        TrainingInterrupted: an error or signal during training (emergency checkpoint).
    """
    out = Path(config.output_dir)
    with training_log(log_path(out)) as record_failure:
        try:
            return _run(_effective(config, debug), config_path, resume, debug, callbacks)
        except BaseException as err:
            record_failure(err)
            raise


def _run(
    config: Config,
    config_path: str | None,
    resume: str | None,
    debug: bool,
    callbacks: Sequence[Any],
) -> Phase2Result:
    started = time.perf_counter()
    out = Path(config.output_dir)
    log.info("Phase 2: config %s, output %s", config_path or "<in memory>", out)
    world, local = world_size()
    if world > 1:
        log.info(
            "process %d of %d (%d on this node), pid %d", process_rank(), world, local, os.getpid()
        )
    # One decision for every dtype below; the config carries the resolved value from here
    # on, so hparams, MLflow params and logs/config.yaml record what ran, never "auto".
    config, precision = with_resolved_precision(config)
    log.info("precision: %s (%s)", precision.precision, precision.reason)
    adapt_threads()  # the CLI's decision, or this process's own; re-checked every 30 s
    plan = plan_run(config, config_path, resume)

    import lightning as L

    from purrsight.train import route_lightning_logs_to_root

    route_lightning_logs_to_root()
    L.seed_everything(config.seed, workers=True, verbose=False)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    bad = BadSamples(config.on_bad_sample)
    train, train_feats, val, val_feats, modalities, aligner_info = aligned_splits(config, plan, bad)
    skipped_file = _record_skipped(bad, out)
    timings["encode"] = time.perf_counter() - t0
    log.info(
        "aligned features for %d train + %d val samples (%s) in %.1f s",
        len(train),
        len(val),
        "+".join(modalities),
        timings["encode"],
    )

    t0 = time.perf_counter()
    model, tokenizer = _build_model(config, plan, modalities, aligner_info["embed_dim"])
    timings["load_llm"] = time.perf_counter() - t0

    train_set, train_loader, val_loader = _datasets(
        config, train, train_feats, val, val_feats, tokenizer
    )
    batches = -(-len(train_set) // (config.batch_size * world))  # per process and epoch
    steps = total_steps(batches, config)
    hparams = _hparams(config, plan, aligner_info, modalities)
    module = _make_module(config, model, steps, hparams)
    if is_rank_zero():
        remove_stale_temps(out / "checkpoints")
        if plan.resume_path is None:
            archive_previous_run(out / "checkpoints")
    continued = _continued_run_id(config, out, plan)
    trainer, checkpoint_cb, emergency_cb, logger = _make_trainer(
        config, out, debug, callbacks, world, local, continued
    )
    if logger:
        _log_run_start(logger, config, out, plan, model, steps, continued)
        log_skipped(logger, bad, skipped_file)
        _run_id_file(out).write_text(logger.run_id, encoding="utf-8")
        module.mlflow_run_id = logger.run_id  # the other ranks get it in module.setup
    log.info(
        "training %d optimizer steps (%d epochs × %d batches of %d, accumulating %d)%s",
        steps,
        config.num_epochs,
        batches,
        config.batch_size,
        config.accumulate_grad_batches,
        f", resuming from {plan.resume_path}" if plan.resume_path else "",
    )

    t0 = time.perf_counter()
    # Frozen linears held in the autocast dtype while fitting (autocast would recast them
    # at every use, twice with gradient checkpointing); the fp32 originals wait in a file
    # in the output folder, so the peak does not hold both, and come back bit for bit
    # before previews and the returned model.
    frozen = precision.autocast_dtype
    remove_stale_spills(out)  # a killed run's fp32 weights (hundreds of MB)
    with model.frozen_linears_as(frozen, spill_dir=out):
        _fit(trainer, module, train_loader, val_loader, plan.resume_path, emergency_cb)
    timings["train"] = time.perf_counter() - t0
    release_freed_memory()  # the freed activations: previews and callers start lean

    previews: list[dict[str, str]] = []
    if config.preview_samples and trainer.is_global_zero:
        t0 = time.perf_counter()
        previews = _preview(config, model, tokenizer, val or train, val_feats or train_feats)
        timings["preview"] = time.perf_counter() - t0
        atomic_write(out / "logs" / "preview.json", json.dumps(previews, indent=2))

    metrics = _summary_metrics(module.history, trainer)
    metrics["nonfinite_steps"] = float(module.nonfinite["total"])
    last = out / "checkpoints" / LAST_NAME
    best = checkpoint_cb.best_model_path
    result = Phase2Result(
        output_dir=out,
        last_checkpoint=last if last.is_file() else None,
        best_checkpoint=Path(best) if best else None,
        aligner_path=plan.aligner_path,
        modalities=modalities,
        history=module.history,
        metrics=metrics,
        timings=timings,
        seconds=time.perf_counter() - started,
        model=model.cpu(),
        tokenizer=tokenizer,
        mlflow_run_id=module.mlflow_run_id,
        previews=previews,
    )
    log.info("Phase 2 done in %.1f s: %s", result.seconds, json.dumps(_rounded(metrics)))
    if logger:
        _log_run_end(logger, config, out, metrics)
    return result


# ----------------------------------------------------------------------------- building


def _build_model(config: Config, plan: RunPlan, modalities: list[str], embed_dim: int):
    """The LLM from its folder, wrapped with LoRA, plus one projector per modality."""
    import lightning as L

    from purrsight.models.llm import load_llm
    from purrsight.models.mm_llm import multimodal_llm_from_config

    llm, tokenizer = load_llm(config.llm_model_name)
    # Re-seeded so the projector and LoRA initialisation do not depend on how many random
    # numbers loading the encoders happened to draw.
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = multimodal_llm_from_config(
        config,
        llm,
        tokenizer,
        in_dim=embed_dim,
        modalities=modalities,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    trainable = sum(p.numel() for p in model.trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "LLM %s (%s): %s parameters, %s trainable (%.2f %%)",
        config.llm_model_name,
        plan.llm_folder,
        f"{total:,}",
        f"{trainable:,}",
        100 * trainable / total,
    )
    return model, tokenizer


def _datasets(config: Config, train, train_feats, val, val_feats, tokenizer):
    from purrsight.train.phase2_data import InstructionDataset, build_loader

    def dataset(samples: list[Sample], feats) -> InstructionDataset:
        ds = InstructionDataset(
            samples,
            feats,
            tokenizer,
            config.num_soft_tokens,
            config.max_text_length,
            config.answer_fields,
        )
        if ds.truncated:
            log.warning(
                "%d of %d responses cut to max_text_length=%d tokens",
                ds.truncated,
                len(ds),
                config.max_text_length,
            )
        return ds

    loader = partial(
        build_loader,
        batch_size=config.batch_size,
        pad_token_id=int(tokenizer.pad_token_id),
        num_workers=config.num_workers,
        seed=config.seed,
        pad_to_multiple_of=config.pad_to_multiple_of,
        packing=config.packing,
    )
    train_set = dataset(train, train_feats)
    train_loader = loader(
        train_set,
        train=True,
        group_by_length=config.group_by_length,
        num_replicas=world_size()[0],
    )
    val_set = dataset(val, val_feats) if val else None
    val_loader = loader(val_set, train=False) if val_set else None
    return train_set, train_loader, val_loader


def _hparams(
    config: Config, plan: RunPlan, aligner_info: dict[str, Any], modalities: list[str]
) -> dict[str, Any]:
    """What a checkpoint records about how it was made (plain values only)."""
    return {
        "config": config.model_dump(),
        "aligner": {
            "path": str(plan.aligner_path.resolve()),
            "sha256": file_sha256(plan.aligner_path),
            "encoders": aligner_info.get("encoders", {}),
            "embed_dim": int(aligner_info["embed_dim"]),
            "run_name": aligner_info.get("run_name"),
        },
        "llm": {"name": config.llm_model_name, "folder": str(plan.llm_folder.resolve())},
        "modalities": modalities,
    }


def _make_module(config: Config, model, steps: int, hparams: dict[str, Any]):
    from purrsight.train.phase2_module import OptimSettings, Phase2Module

    optim = OptimSettings(config.learning_rate, config.weight_decay, config.warmup_steps, steps)
    # load_llm returns the LLM in eval mode and Lightning keeps each module's mode as it
    # finds it: without this, LoRA dropout and gradient checkpointing would stay off.
    model.train()
    return Phase2Module(model, optim, config.log_every_n_steps, hparams, config.max_nonfinite_steps)


def _make_trainer(
    config: Config,
    out: Path,
    debug: bool,
    callbacks,
    world: int,
    local: int,
    run_id: str | None = None,
):
    """Trainer + its checkpoint callbacks + the MLflow logger (rank 0 only, else None);
    ``run_id``: an MLflow run to continue instead of starting one."""
    import warnings

    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from purrsight.train.phase2_module import (
        AtomicCheckpointIO,
        EmergencyCheckpoint,
        GuideNamedCheckpoint,
    )
    from purrsight.train.tracking import make_logger

    # Hints that do not apply: features are precomputed (workers only collate), and a
    # resumed run writes into its own non-empty checkpoint folder on purpose.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")
    checkpoint_dir = out / "checkpoints"
    checkpoint_cb = GuideNamedCheckpoint(
        dirpath=checkpoint_dir,
        filename=EPOCH_FILENAME,
        auto_insert_metric_name=False,
        monitor="train_loss_epoch",
        mode="min",
        save_top_k=config.save_top_k,
        save_last=True,
        save_on_train_epoch_end=True,
    )
    emergency_cb = EmergencyCheckpoint(checkpoint_dir)
    logger = None
    if config.mlflow.enabled and is_rank_zero():
        # One MLflow run per job, created by rank 0 only (two processes creating one SQLite
        # store race); a restarted or resumed job continues its run.
        run_name = f"phase2-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        logger = make_logger(
            config.mlflow.tracking_uri, config.mlflow.experiment_name, run_name, run_id=run_id
        )
    distributed = world > 1
    if torch.cuda.is_available():
        # Length-grouped batches change the sequence length every step, and cuDNN's SDPA
        # builds a new plan for each new length (measured on an H100: 3.5 ms of CPU per
        # attention backward, the step 1.7x slower); flash attention needs no plan.
        torch.backends.cuda.enable_cudnn_sdp(False)
    trainer = L.Trainer(
        accelerator="auto",
        devices=local if distributed else 1,
        num_nodes=world // local if distributed else 1,
        # Every trainable parameter gets a gradient at every step (frozen ones have
        # requires_grad False; Phase2Module gives absent modalities' projectors a zero
        # one), so DDP needs no per-step search for unused parameters.
        strategy=DDPStrategy(find_unused_parameters=False) if distributed else "auto",
        precision=config.precision,
        max_epochs=config.num_epochs,
        max_steps=config.max_steps,
        accumulate_grad_batches=config.accumulate_grad_batches,
        gradient_clip_val=config.gradient_clip_val,
        logger=logger if logger is not None else False,
        callbacks=[*callbacks, emergency_cb, checkpoint_cb, ReleaseFreedMemory()],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=config.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        default_root_dir=out,
        detect_anomaly=debug,
        limit_train_batches=DEBUG_LIMIT_BATCHES if debug else None,
        limit_val_batches=DEBUG_LIMIT_BATCHES if debug else None,
    )
    return trainer, checkpoint_cb, emergency_cb, logger


# ----------------------------------------------------------------------------- fit


def _fit(trainer, module, train_loader, val_loader, resume_path, emergency_cb) -> None:
    """``trainer.fit``; an error or signal becomes :class:`TrainingInterrupted` naming the
    emergency checkpoint (Lightning turns SIGTERM into ``SIGTERMException`` and Ctrl+C
    into ``SystemExit(1)`` after its callbacks ran)."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        trainer.fit(
            module,
            train_loader,
            val_loader,
            ckpt_path=str(resume_path) if resume_path else None,
            weights_only=True,
        )
    except BaseException as err:
        cause = emergency_cb.exception or err
        if getattr(trainer, "received_sigterm", False):
            # The signal is the cause even when something else failed first (a process
            # group's SIGTERM also kills DataLoader workers, which raises in the loop).
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            cause = SIGTERMException()
        step, path = trainer.global_step, emergency_cb.path
        raise _interrupted(cause, step, path, trainer.is_global_zero) from err
    finally:
        if main_thread:
            # Lightning ignores Ctrl+C for good after catching one; give the caller its own
            # handler back (a second run, or the rest of a test session, stays interruptible).
            signal.signal(signal.SIGINT, sigint)


def _interrupted(
    cause: BaseException, step: int, checkpoint: Path | None, rank_zero: bool = True
) -> TrainingInterrupted:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(cause, SIGTERMException):
        what, code = "stopped by SIGTERM", 143
    elif isinstance(cause, KeyboardInterrupt):
        what, code = "stopped by SIGINT (Ctrl+C)", 130
    else:
        first = (str(cause).strip().splitlines() or [""])[0]
        what, code = f"failed: {type(cause).__name__}: {first}", 1
    if not rank_zero:
        where = f" (rank {process_rank()}); rank 0 writes the emergency checkpoint"
    elif checkpoint:
        where = f"; emergency checkpoint {checkpoint} (continue with --resume {checkpoint})"
    elif step == 0:
        where = "; no checkpoint written (no optimizer step done)"
    else:
        where = "; the emergency checkpoint could not be written (see training.log)"
    return TrainingInterrupted(f"training {what} at step {step}{where}", code, checkpoint)


# ----------------------------------------------------------------------------- after fit


def _preview(
    config: Config, model, tokenizer, samples: list[Sample], feats
) -> list[dict[str, str]]:
    """Generate reports for the first ``preview_samples`` samples and log them."""
    from purrsight.data.instruction import collate, encode_prompt, make_item

    chosen = samples[: config.preview_samples]
    items = []
    for i, sample in enumerate(chosen):
        row = feats.row(i)
        prompt = encode_prompt(tokenizer, list(row), sample.instruction, config.num_soft_tokens)
        items.append(make_item(prompt, row, sample.id))
    batch = collate(items, int(tokenizer.pad_token_id), padding_side="left")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    texts = model.generate(max_new_tokens=config.max_new_tokens, **batch.to(device).model_inputs())
    previews = []
    for sample, text in zip(chosen, texts, strict=True):
        log.info("preview %s (label %s): %s", sample.id, sample.label, text)
        previews.append({"id": sample.id, "label": sample.label or "", "generated": text})
    return previews


def _summary_metrics(history: list[dict[str, float]], trainer) -> dict[str, float]:
    """First/last loss, steps and throughput (the first batch, which warms up, excluded)."""
    metrics: dict[str, float] = {"steps": float(trainer.global_step)}
    if history:
        metrics["loss_first"] = history[0]["loss"]
        metrics["loss_last"] = history[-1]["loss"]
        timed = history[1:] or history
        seconds = sum(h["seconds"] for h in timed)
        metrics["seconds_per_batch"] = seconds / len(timed)
        metrics["tokens_per_second"] = sum(h["tokens"] for h in timed) / seconds
        metrics["samples_per_second"] = sum(h["samples"] for h in timed) / seconds
    for key in ("train_loss_epoch", "val_loss"):
        value = trainer.callback_metrics.get(key)
        if value is not None:
            metrics[key] = float(value)
    return metrics


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def _record_skipped(bad: BadSamples, out: Path) -> Path | None:
    """Under ``on_bad_sample: skip``, rank 0 writes ``logs/skipped_samples.jsonl`` (every
    skipped sample, or empty); returns it (None under ``error`` or on other ranks)."""
    if bad.policy != "skip" or not is_rank_zero():
        return None
    path = bad.write(out / "logs" / SKIPPED_FILE)
    log.info("%s; listed in %s", bad.summary(), path)
    return path


def log_skipped(logger, bad: BadSamples, skipped_file: Path | None) -> None:
    """The ``skipped_samples`` count as an MLflow metric, the list as an artifact."""
    logger.log_metrics({"skipped_samples": float(len(bad.skipped))}, step=0)
    if skipped_file is not None:
        logger.experiment.log_artifact(logger.run_id, str(skipped_file))


def _run_id_file(out: Path) -> Path:
    """Where rank 0 notes this job's MLflow run id (a restarted job continues that run)."""
    return out / "logs" / "mlflow_run_id"


def _restarted_run_id(out: Path) -> str | None:
    """The MLflow run this job started before a launcher restarted it, or None."""
    path = _run_id_file(out)
    if restart_count() and path.is_file():
        return path.read_text(encoding="utf-8").strip() or None
    return None


def _continued_run_id(config: Config, out: Path, plan: RunPlan) -> str | None:
    """The MLflow run this job continues (rank 0, MLflow on): the one a launcher restart
    left in ``logs/mlflow_run_id``, or the run that wrote the ``--resume`` checkpoint when
    that run is in this store and experiment. None: a new run."""
    if not (config.mlflow.enabled and is_rank_zero()):
        return None
    restarted = _restarted_run_id(out)
    if restarted or plan.resume_path is None:
        return restarted
    from purrsight.train.checkpointing import read_checkpoint

    run_id = read_checkpoint(plan.resume_path).get("mlflow_run_id")
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    client = MlflowClient(tracking_uri=resolve_tracking(config.mlflow.tracking_uri)[0])
    try:
        experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    except MlflowException:
        experiment = None
    if experiment is None or experiment.name != config.mlflow.experiment_name:
        log.info("the checkpoint's MLflow run %s is not in this store: a new run", run_id)
        return None
    log.info("continuing the checkpoint's MLflow run %s", run_id)
    return run_id


def _log_run_start(
    logger, config: Config, out: Path, plan: RunPlan, model, steps: int, continued: str | None
) -> None:
    """Flattened config + run facts as MLflow params; the resolved config as an artifact.
    A continued run already has its params (MLflow refuses changing one): it gets a
    ``restart_<k>`` (launcher restart) or ``resume_step_<n>`` (``--resume``) tag naming the
    checkpoint it continued from instead."""
    if continued is not None and logger.run_id == continued:
        where = str(plan.resume_path) if plan.resume_path else "the start"
        if restart_count():
            tag = f"restart_{restart_count()}"
        else:
            tag = f"resume_step_{read_checkpoint_step(plan.resume_path)}"
        logger.experiment.set_tag(logger.run_id, tag, where)
        return
    config_file = out / "logs" / "config.yaml"
    dump_config(config, config_file)
    params = {
        **to_flat_dict(config),
        "run.aligner_path": str(plan.aligner_path),
        "run.llm_folder": str(plan.llm_folder),
        "run.resume_from": str(plan.resume_path) if plan.resume_path else "",
        "run.total_steps": steps,
        "run.trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
    }
    logger.log_hyperparams(params)
    logger.experiment.log_artifact(logger.run_id, str(config_file))


def read_checkpoint_step(path: Path | None) -> int:
    """The optimizer step a checkpoint was written at (0 for none)."""
    from purrsight.train.checkpointing import read_checkpoint

    return int(read_checkpoint(path).get("global_step", 0)) if path else 0


def _log_run_end(logger, config: Config, out: Path, metrics: dict[str, float]) -> None:
    from purrsight.train.tracking import ui_command

    logger.log_metrics({f"final_{k}": v for k, v in metrics.items()})
    for name in ("preview.json", "training.log"):
        path = out / "logs" / name
        if path.is_file():
            logger.experiment.log_artifact(logger.run_id, str(path))
    logger.finalize("success")
    log.info("MLflow run %s; view with: %s", logger.run_id, ui_command(config.mlflow.tracking_uri))
