"""Lightning pieces of Phase 2: the module that trains projectors + LoRA, and the callbacks
that make its checkpoints trainable-only, atomic, and written on a crash or a signal.

The module holds only the :class:`~purrsight.models.mm_llm.MultimodalLLM` (aligned features
are precomputed), and its ``state_dict`` is the model's trainable tensors, so every
Lightning checkpoint — top-k, ``last.ckpt``, emergency — is megabytes and loads back
strictly. RNG state is saved too and put back right before the first batch after a
resume, so dropout masks continue as if the run had never stopped.

Shapes: b = batch, s = sequence length.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from purrsight.data.instruction import IGNORE_INDEX, Batch
from purrsight.models.mm_llm import MultimodalLLM
from purrsight.progress import Progress
from purrsight.threads import poll as recheck_threads
from purrsight.train.checkpointing import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    capture_rng_state,
    check_trainable_only,
    emergency_path,
    read_checkpoint,
    restore_rng_state,
)
from purrsight.train.distributed import is_distributed
from purrsight.train.phase2_data import ResumableDataLoader
from purrsight.train.schedule import warmup_then_decay

log = logging.getLogger(__name__)
PREFIX = "model."


@dataclass(frozen=True)
class OptimSettings:
    """AdamW + linear warmup then linear decay, stepped per optimizer step."""

    learning_rate: float
    weight_decay: float
    warmup_steps: int
    total_steps: int


class NonFiniteLoss(RuntimeError):
    """The loss was NaN or infinite for ``max_nonfinite_steps`` batches in a row."""


class _Keys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Phase2Module(L.LightningModule):
    """Next-token loss on the assistant's tokens of chat prompts with spliced soft tokens.

    Args:
        model: projectors + LoRA-wrapped LLM (the only trainable weights).
        optim: optimizer and schedule settings.
        log_every_n_steps: a progress line goes to the log every this many optimizer
            steps, or at least every 30 s (:class:`~purrsight.progress.Progress`).
        hparams: plain values stored in every checkpoint (resolved config, aligner, LLM).
        max_nonfinite_steps: batches in a row with a NaN/inf loss before the run stops
            (:class:`NonFiniteLoss`; the emergency checkpoint holds the last good weights).

    A batch whose loss is non-finite on any process (decided together: one all_reduce)
    is learned from by none: its optimizer step, or the accumulation window it is in,
    applies no update (the gradients are dropped before the optimizer sees them). It is
    counted (``nonfinite_steps`` metric, a warning naming the step).
    """

    def __init__(
        self,
        model: MultimodalLLM,
        optim: OptimSettings,
        log_every_n_steps: int,
        hparams: dict[str, Any],
        max_nonfinite_steps: int = 5,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.log_every_n_steps = log_every_n_steps
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite = {"total": 0, "in_a_row": 0}
        """Batches skipped for a non-finite loss: all of them, and the current streak."""
        self._drop_window = False  # a non-finite batch in this accumulation window
        self.window_start: tuple[int, int, dict[str, Any]] | None = None
        """(epoch, batch index, RNG state) at the start of the current accumulation window."""
        # Not sent to the logger: the flattened config is logged as MLflow params instead.
        self.save_hyperparameters({**hparams, "format": CHECKPOINT_FORMAT}, logger=False)
        self.history: list[dict[str, float]] = []
        """One entry per training batch: step, loss, lr, seconds, tokens, samples."""
        self._pending_rng: dict[str, Any] | None = None
        self._batch_started = 0.0
        self._batch_stats: dict[str, float] = {}
        self._progress: Progress | None = None
        self.mlflow_run_id: str | None = None
        """The job's MLflow run (rank 0 creates it; every rank knows it from ``setup``)."""

    def setup(self, stage: str) -> None:
        # Called on every process once the process group is up, before any step or
        # checkpoint: all of them take part in the broadcast (a collective).
        self.mlflow_run_id = self.trainer.strategy.broadcast(self.mlflow_run_id, src=0)
        if self.mlflow_run_id and is_distributed():
            log.info("this job's MLflow run: %s", self.mlflow_run_id)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Loss of one right-padded batch ([b, s] ids, labels, mask + features)."""
        local_mean = self.model(**batch.model_inputs()).loss
        loss, global_mean = globally_normalised(local_mean, target_count(batch.labels))
        # A batch without an image (or audio) row leaves that projector out of the graph;
        # DDP (find_unused_parameters=False) needs a gradient, zero, for every parameter.
        loss = loss + self._absent_projectors_term(batch)
        size = batch.num_samples
        if any_rank_nonfinite(local_mean):
            # Backward still runs (DDP needs every process in it); the gradients are
            # dropped in on_before_optimizer_step.
            self._skip_nonfinite(size)
            return loss
        self.nonfinite["in_a_row"] = 0
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        # Step-level curve for MLflow; the epoch mean is what checkpoints are ranked by.
        self.log(
            "train_loss", global_mean, on_step=True, on_epoch=False, prog_bar=True, batch_size=size
        )
        self.log(
            "train_loss_epoch",
            global_mean,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=size,
        )
        self.log("lr", lr, on_step=True, on_epoch=False, batch_size=size)
        self._batch_stats = {
            "loss": float(global_mean),
            "lr": lr,
            "tokens": float(batch.attention_mask.sum()),  # non-pad tokens
            "samples": float(size),
        }
        return loss

    def _skip_nonfinite(self, size: int) -> None:
        """Count a non-finite batch; raise :class:`NonFiniteLoss` after too many in a row
        (every process reaches the same count, so all of them raise together)."""
        self._drop_window = True
        self.nonfinite["total"] += 1
        self.nonfinite["in_a_row"] += 1
        self._batch_stats = {}
        step = self.global_step + 1
        log.warning(
            "step %d: non-finite loss, batch skipped (no update; %d skipped in all, %d in a row)",
            step,
            self.nonfinite["total"],
            self.nonfinite["in_a_row"],
        )
        self.log("nonfinite_steps", float(self.nonfinite["total"]), on_step=True, batch_size=size)
        if self.nonfinite["in_a_row"] >= self.max_nonfinite_steps:
            raise NonFiniteLoss(
                f"the loss was NaN or infinite for {self.nonfinite['in_a_row']} batches in a "
                f"row (max_nonfinite_steps={self.max_nonfinite_steps}); lower learning_rate, "
                "check the data with `purrsight data check`, or use precision: '32'"
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the gradients of a window that held a non-finite batch (or that are
        themselves non-finite) so the optimizer makes no update: AdamW skips parameters
        without a gradient (no moment update, no weight decay). Under DDP the gradients
        are already averaged, so every process decides the same."""
        drop = self._drop_window or not gradients_finite(optimizer)
        if drop and not self._drop_window:
            self.nonfinite["total"] += 1
            log.warning("step %d: non-finite gradient, update skipped", self.global_step + 1)
        self._drop_window = False
        if drop:
            optimizer.zero_grad(set_to_none=True)

    def _absent_projectors_term(self, batch: Batch) -> torch.Tensor:
        """0 × the parameters of every projector no row of ``batch`` uses (a scalar)."""
        term = torch.zeros((), device=batch.input_ids.device)
        for modality in self.model.modalities:
            present = batch.present.get(modality)
            if present is None or not bool(present.any()):
                for param in self.model.projectors[modality].parameters():
                    term = term + 0.0 * param.sum()
        return term

    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch.model_inputs()).loss
        size = batch.num_samples
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, prog_bar=True, batch_size=size)
        return loss

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        if isinstance(batch, Batch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ------------------------------------------------------------------ throughput

    def on_train_start(self) -> None:
        # Timed from here, after setup and any resume: the ETA counts this run's steps only.
        if self.trainer.is_global_zero:
            self._progress = Progress(
                "phase2",
                self.optim.total_steps,
                log,
                every_n=self.log_every_n_steps,
                done=self.global_step,
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            # Restored here, not at load time: building the resumed run (data iterators,
            # logger) may draw random numbers an uninterrupted run never drew.
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
        if batch_idx % self.trainer.accumulate_grad_batches == 0:
            # Where an emergency checkpoint taken before this window's optimizer step
            # rewinds to: the window's batches are redone with the same dropout masks.
            self.window_start = (self.current_epoch, batch_idx, capture_rng_state())
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        seconds = max(time.perf_counter() - self._batch_started, 1e-9)
        # Threads follow the idle cores: a clock read per step, a re-decision every 30 s
        # (a busy process beside training made each 2-thread step 3.4x slower, 1.8x adapted).
        recheck_threads()
        stats = self._batch_stats
        if not stats:  # a skipped (non-finite) batch: counted, not in the loss curve
            return
        size = int(stats["samples"])
        tokens_per_second = stats["tokens"] / seconds
        self.log("tokens_per_second", tokens_per_second, on_step=True, batch_size=size)
        self.log("samples_per_second", stats["samples"] / seconds, on_step=True, batch_size=size)
        self.history.append({"step": self.global_step, **stats, "seconds": seconds})
        if self._progress is not None:  # rank 0 only
            self._progress.update(
                self.global_step,
                epoch=self.current_epoch,
                loss=stats["loss"],
                lr=stats["lr"],
                **{"tokens/s": tokens_per_second},
            )

    def on_train_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("train_loss_epoch")
        if loss is not None and self.trainer.is_global_zero:
            log.info("epoch %d done: mean train loss %.4f", self.current_epoch, float(loss))

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val_loss")
        if loss is not None and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            log.info("epoch %d: val loss %.4f", self.current_epoch, float(loss))

    # ------------------------------------------------------------------ optimizer

    def configure_optimizers(self):
        # No weight decay on biases and norm weights (1-d): decaying them only hurts.
        decay, no_decay = [], []
        for param in self.model.trainable_parameters():
            (decay if param.ndim >= 2 else no_decay).append(param)
        groups = [{"params": decay, "weight_decay": self.optim.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=self.optim.learning_rate)
        scheduler = warmup_then_decay(
            optimizer, self.optim.warmup_steps, self.optim.total_steps, "linear"
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, *args: Any, destination=None, prefix: str = "", keep_vars: bool = False):
        """Only the trainable tensors (projectors + LoRA), named ``model.<name>``: what
        every checkpoint holds. The frozen LLM is rebuilt from its folder instead."""
        state = destination if destination is not None else {}
        for key, value in self.model.trainable_state_dict().items():
            state[f"{prefix}{PREFIX}{key}"] = value
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """Load projector + LoRA tensors strictly (any missing or extra key is an error,
        whatever ``strict`` says: a silently half-loaded adapter is never what is wanted)."""
        stripped = {k.removeprefix(PREFIX): v for k, v in state_dict.items()}
        self.model.load_trainable_state_dict(stripped)
        return _Keys([], [])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_trainable_only(checkpoint["state_dict"])
        checkpoint["rng_states"] = capture_rng_state()
        checkpoint["mlflow_run_id"] = self.mlflow_run_id  # which run trained it
        checkpoint["nonfinite"] = dict(self.nonfinite)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_rng = checkpoint.get("rng_states")
        self.nonfinite = dict(checkpoint.get("nonfinite", self.nonfinite))


# ----------------------------------------------------------------------------- loss


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """Tokens the loss is taken over: [b, s] labels → scalar long. Position t predicts
    token t + 1, so the first column is never a target (the causal shift)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def globally_normalised(
    local_mean: torch.Tensor, local_count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, the job's mean loss over all its target tokens, detached).

    ``local_mean`` is this process's mean over its ``local_count`` target tokens. DDP
    averages gradients over w processes, so backpropagating ``local_sum · w / global_count``
    gives the gradient of ``global_sum / global_count``: one step of w processes × batch b
    equals one step of one process × batch w·b, however the tokens fall between the
    processes. Alone, both are ``local_mean``. Every process must call this (all_reduce).
    """
    if not is_distributed():
        return local_mean, local_mean.detach()
    stats = torch.stack([local_mean.detach().float() * local_count, local_count.float()])
    torch.distributed.all_reduce(stats)  # [global sum, global count]
    global_sum, global_count = stats[0], stats[1]
    world = torch.distributed.get_world_size()
    loss = local_mean * (local_count.to(local_mean.dtype) * world / global_count)
    return loss, global_sum / global_count


def any_rank_nonfinite(value: torch.Tensor) -> bool:
    """True on every process when ``value`` (a scalar) is NaN/inf on any of them (one
    all_reduce of a flag: the processes must skip a step together or not at all)."""
    flag = (~torch.isfinite(value.detach())).float().reshape(1)
    if is_distributed():
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item() > 0)


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return True
    # One flag per tensor, then one host sync (not one per tensor on a GPU).
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


# ----------------------------------------------------------------------------- callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes goes to a temp file first, then ``os.replace``;
    every checkpoint it reads is loaded weights-only, whatever the caller asks for."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location=None, weights_only=None) -> dict[str, Any]:
        # A crafted pickle is refused (one line naming the file) and its code never runs,
        # even if some Lightning path asks for weights_only=False.
        return read_checkpoint(Path(path))


class EmergencyCheckpoint(Callback):
    """On any exception, SIGTERM or SIGINT during fit: write
    ``<dirpath>/emergency-step=<n>.ckpt`` (same trainable-only format, resumable).

    Lightning turns SIGTERM into an exception at the end of the current batch and catches
    Ctrl+C; both reach ``on_exception``, like an error raised inside a step."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)
        self.exception: BaseException | None = None
        self.path: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        self.exception = exception
        step = trainer.global_step
        if step == 0:
            log.warning("stopped before the first optimizer step: no emergency checkpoint")
            return
        loader = trainer.train_dataloader
        # A batch that failed before its optimizer step was handed out but not learned
        # from: resume must start with it again. "processed" (not "completed") because a
        # failure in on_train_batch_end comes after the step, and Lightning then counts
        # that batch as done when it restarts. Batches of an accumulation window whose
        # step never came are redone too (their summed gradients are lost).
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        partial = done % trainer.accumulate_grad_batches
        if done >= trainer.num_training_batches:  # the epoch's last batch always steps
            partial = 0
        if isinstance(loader, ResumableDataLoader):
            loader.rewind_to(done - partial)
        path = emergency_path(self.dirpath, step)
        try:
            with _worker_deaths_ignored():
                checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                _mark_between_epochs(checkpoint["loops"])
                if partial:
                    _rewind_batches(checkpoint["loops"], partial)
                window = getattr(pl_module, "window_start", None)
                if window is not None and window[:2] == (trainer.current_epoch, done - partial):
                    checkpoint["rng_states"] = window[2]  # as the redone window first began
                if trainer.is_global_zero:
                    atomic_torch_save(checkpoint, path)
        except Exception:  # noqa: BLE001 - never hide the original failure behind this one
            log.exception("could not write the emergency checkpoint %s", path)
            return
        if trainer.is_global_zero:  # only rank 0 writes (and so names) the file
            log.warning("emergency checkpoint written: %s", path)
            self.path = path


def _mark_between_epochs(loops: dict[str, Any]) -> None:
    """Make a checkpoint taken between two epochs resume at the next epoch's first batch.

    Lightning raises on SIGTERM after an epoch's last batch only once the epoch is counted
    complete, a moment its own checkpoints are never taken at: the epoch loop's per-epoch
    counters still say "all batches done", so a resume would run the next epoch with no
    batches and skip to the one after. When every epoch counter is settled, zero those
    per-epoch counters (the totals, which count steps, stay)."""
    fit = loops["fit_loop"]
    epochs = fit["epoch_progress"]["total"]
    if not epochs["ready"] == epochs["started"] == epochs["processed"] == epochs["completed"]:
        return
    trackers = [fit["epoch_loop.batch_progress"], fit["epoch_loop.scheduler_progress"]]
    trackers += fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"].values()
    for tracker in trackers:
        tracker["current"] = {key: 0 for key in tracker["current"]}
    fit["epoch_loop.batch_progress"]["is_last_batch"] = False


def _rewind_batches(loops: dict[str, Any], count: int) -> None:
    """Count the last ``count`` batches of the epoch as never run (an accumulation window
    interrupted before its optimizer step): resume hands them out again, with the same
    batch indices, so the window's step falls where it would have."""
    progress = loops["fit_loop"]["epoch_loop.batch_progress"]
    for part in ("current", "total"):
        done = progress[part]["processed"] - count
        progress[part] = {key: max(0, done) for key in progress[part]}
    progress["is_last_batch"] = False


@contextlib.contextmanager
def _worker_deaths_ignored() -> Iterator[None]:
    """Silence PyTorch's SIGCHLD handler and ignore SIGTERM while the emergency checkpoint
    is written.

    A SIGTERM sent to the whole process group (torchrun, schedulers) kills the DataLoader
    workers too; each death raises a RuntimeError in the main process from that handler,
    which would abort the write half-way. Lightning's own SIGTERM handler broadcasts to the
    other processes, which raises mid-write when one of them is dead (torchrun sends
    SIGTERM to the survivors after a worker died). The run is ending either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    masked = {s: signal.SIG_DFL for s in [getattr(signal, "SIGCHLD", None)] if s is not None}
    masked[signal.SIGTERM] = signal.SIG_IGN
    previous = {s: signal.signal(s, handler) for s, handler in masked.items()}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class GuideNamedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose file names count epochs from 1, as the guide's examples do
    (``phase2-epoch=01-…`` is the first epoch); Lightning's own counter starts at 0."""

    def format_checkpoint_name(self, metrics, filename=None, ver=None, prefix=None) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": int(metrics["epoch"]) + 1}
        return super().format_checkpoint_name(metrics, filename, ver=ver, prefix=prefix)
