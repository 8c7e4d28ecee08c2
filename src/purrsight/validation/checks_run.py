"""Checks 8-9: MLflow logging and a short training run through the real Trainer.

Both work in the run's temporary folder: validation never adds runs to the user's
tracking store or files to their output folder.
"""

from __future__ import annotations

import math
import shutil
from datetime import datetime
from pathlib import Path

import torch

from purrsight.validation.context import CheckFailed, CheckSkipped, ValidationContext

METRIC_VALUES = (2.5, 2.0, 1.5)


# ----------------------------------------------------------------------------- 8


def check_mlflow_logging(ctx: ValidationContext) -> str:
    """Write a run's params (the flattened config), a metric series and the config artifact
    through the Lightning MLflow logger training uses, then read them back with a separate
    client. A folder store is tested on a temporary copy of its ``mlflow.db``."""
    from mlflow.tracking import MlflowClient

    from purrsight.config import dump_config, to_flat_dict
    from purrsight.train.tracking import make_logger, resolve_tracking

    config = ctx.config
    if not config.mlflow.enabled:
        raise CheckSkipped("mlflow.enabled is false: training logs no MLflow run")
    store, experiment = _validation_store(ctx, config.mlflow.tracking_uri)
    uri, _ = resolve_tracking(store)
    where = f"MLflow store {config.mlflow.tracking_uri}"
    try:
        logger = make_logger(store, experiment, f"validate-{datetime.now():%Y%m%d-%H%M%S}")
        params = {k: str(v)[:250] for k, v in to_flat_dict(config).items()}
        logger.log_hyperparams(params)
        for step, value in enumerate(METRIC_VALUES):
            logger.log_metrics({"validate_loss": value}, step=step)
        config_file = ctx.workdir / "mlflow-config" / "config.yaml"
        dump_config(config, config_file)
        logger.experiment.log_artifact(logger.run_id, str(config_file))
        logger.finalize("success")
        run_id = logger.run_id
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "validate_loss")
        artifacts = [a.path for a in client.list_artifacts(run_id)]
    except Exception as err:  # noqa: BLE001 - any store problem is this check's failure
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckFailed(f"{where}: {type(err).__name__}: {first}") from None
    wrong = sorted(k for k, v in params.items() if run.data.params.get(k) != v)
    if wrong:
        raise CheckFailed(f"{where}: params read back differ: {wrong[:3]}")
    series = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
    if series != list(enumerate(METRIC_VALUES)):
        raise CheckFailed(f"{where}: metric validate_loss read back as {series}")
    if run.info.status != "FINISHED" or "config.yaml" not in artifacts:
        raise CheckFailed(f"{where}: run {run.info.status}, artifacts {artifacts}")
    if not store.startswith(ctx.workdir.as_posix()):
        client.delete_run(run_id)  # a server: leave no validation run behind
    else:
        ctx.mlflow_store, ctx.mlflow_experiment = store, experiment
    kind = uri.split(":")[0]
    return f"{len(params)} params, {len(series)} metric values, 1 artifact read back ({kind})"


def _validation_store(ctx: ValidationContext, tracking: str) -> tuple[str, str]:
    """(store, experiment) to validate on. A folder or SQLite store: a temporary copy of
    its database (keeping any corruption of the real one) with the experiment
    ``<experiment>-validation``, whose artifacts go to the temporary folder (the real
    experiment's artifact location is the user's). Another URI (a server): itself."""
    from purrsight.train.tracking import _URI_SCHEMES  # what resolve_tracking treats as a URI

    experiment = f"{ctx.config.mlflow.experiment_name}-validation"
    if tracking.startswith("sqlite:///"):
        db = Path(tracking.removeprefix("sqlite:///"))
    elif tracking.startswith(_URI_SCHEMES):
        return tracking, experiment
    else:
        db = Path(tracking) / "mlflow.db"
    target = ctx.workdir / "mlruns"
    target.mkdir(parents=True, exist_ok=True)
    if db.is_file():
        shutil.copyfile(db, target / "mlflow.db")
    return target.as_posix(), experiment


# ----------------------------------------------------------------------------- 9


def check_short_training_run(ctx: ValidationContext) -> str:
    """``run_phase2`` (the real Lightning Trainer, checkpoint callbacks, MLflow logger) on
    a copy of a few samples: one epoch of 2 optimizer steps writing ``last.ckpt``, then
    ``--resume`` from it for a second epoch. The checkpoint holds the trained weights and
    the resumed run starts from them and continues the step count. The runs log to
    MLflow on check 8's temporary store when check 8 passed (a new SQLite store costs
    ~10 s of migrations), else without MLflow."""
    import re

    from purrsight.train.checkpointing import (
        EPOCH_NAME_PATTERN,
        check_trainable_only,
        read_checkpoint,
    )
    from purrsight.train.phase2 import TrainingInterrupted, run_phase2
    from purrsight.validation.checks_setup import BATCH_SIZE, pick_samples
    from purrsight.validation.subset import write_subset

    config = ctx.config
    size = min(config.batch_size, BATCH_SIZE)
    train = pick_samples(ctx.train, ctx.modalities, size)
    steps = math.ceil(len(train) / size)
    data = write_subset({"train": train, "val": ctx.val[:1]}, ctx.workdir / "short-run-data")
    first = _short_config(ctx, data, size, epochs=1)
    probe = _start_probe()
    callbacks = list(ctx.hooks.trainer_callbacks)
    try:
        one = run_phase2(first, ctx.config_path, callbacks=callbacks)
        if one.last_checkpoint is None:
            raise CheckFailed("the first epoch wrote no last.ckpt")
        saved = read_checkpoint(one.last_checkpoint)["state_dict"]
        second = first.model_copy(update={"num_epochs": 2})
        two = run_phase2(second, ctx.config_path, resume="last", callbacks=[probe, *callbacks])
    except TrainingInterrupted as err:
        raise CheckFailed(str(err)) from None
    check_trainable_only(saved)
    _same(saved, one.model.trainable_state_dict(), "last.ckpt does not hold the trained weights")
    _same(saved, probe.state, "the resumed run did not start from last.ckpt's weights")
    names = [p.name for p in (Path(first.output_dir) / "checkpoints").glob("phase2-*.ckpt")]
    if not any(re.fullmatch(EPOCH_NAME_PATTERN, n) for n in names):
        raise CheckFailed(f"no epoch checkpoint named like the guide's: {names}")
    if (one.metrics.get("steps"), two.metrics.get("steps")) != (steps, 2 * steps):
        got = (one.metrics.get("steps"), two.metrics.get("steps"))
        raise CheckFailed(f"optimizer steps {got}, expected ({steps}, {2 * steps}) across resume")
    losses = [h["loss"] for h in one.history + two.history]
    if not all(math.isfinite(x) for x in losses):
        raise CheckFailed(f"non-finite training losses: {losses}")
    logged = "MLflow on" if first.mlflow.enabled else "MLflow off"
    return (
        f"{steps} step(s) → last.ckpt, resumed → step {2 * steps} ({logged}); "
        f"losses {losses[0]:.4f} … {losses[-1]:.4f}"
    )


def _short_config(ctx: ValidationContext, data: Path, size: int, epochs: int):
    config = ctx.config
    store = ctx.mlflow_store
    mlflow = config.mlflow.model_copy(
        update={
            "tracking_uri": store or config.mlflow.tracking_uri,
            "experiment_name": ctx.mlflow_experiment or config.mlflow.experiment_name,
            "enabled": config.mlflow.enabled and bool(store),
        }
    )
    return config.model_copy(
        update={
            "data_dir": str(data),
            "output_dir": str(ctx.workdir / "short-run"),
            # With feature_cache on, the cache code runs too, on a folder of its own.
            "feature_cache_dir": str(ctx.workdir / "short-run-cache"),
            "batch_size": size,
            "num_epochs": epochs,
            "max_steps": -1,
            "save_top_k": 1,
            "log_every_n_steps": 1,
            "preview_samples": 0,
            "mlflow": mlflow,
        }
    )


def _same(saved: dict, state: dict | None, message: str) -> None:
    """``saved`` (a checkpoint's ``model.``-prefixed state_dict) equals ``state``."""
    state = {f"model.{k}": v for k, v in (state or {}).items()}
    if set(saved) != set(state) or not all(
        torch.equal(saved[k].cpu(), state[k].cpu()) for k in saved
    ):
        raise CheckFailed(message)


def _start_probe():
    """A Lightning callback recording the trainable state when training starts (after a
    resume has loaded the checkpoint); made here so importing this needs no Lightning."""
    from lightning.pytorch.callbacks import Callback

    class StartProbe(Callback):
        state: dict | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            self.state = {
                k: v.detach().cpu().clone()
                for k, v in pl_module.model.trainable_state_dict().items()
            }

    return StartProbe()
