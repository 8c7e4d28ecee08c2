"""Phase 2 checkpoint files: where they are, how they are written, what they may hold.

A Phase 2 ``.ckpt`` is a Lightning checkpoint whose ``state_dict`` holds only what trains
(projector and LoRA tensors, ``model.projectors.*`` / ``model.llm.*.lora_*``) next to the
optimizer, LR-scheduler, loop and RNG state: megabytes, never the base LLM or the
encoders. ``hyper_parameters`` carry the resolved config and the aligner's path and
sha256, so a checkpoint says what it was trained with.

Nothing here imports Lightning (it costs ~9 s): the CLI resolves paths and refuses a bad
run before the heavy imports.
"""

from __future__ import annotations

import glob
import logging
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purrsight.config import ConfigError
from purrsight.files import TEMP_SUFFIX, atomic_write
from purrsight.hashing import file_sha256 as file_sha256  # re-exported
from purrsight.models.weights import CHECKPOINT_FORMAT as CHECKPOINT_FORMAT  # re-exported
from purrsight.models.weights import read_phase2_checkpoint as read_checkpoint  # noqa: F401

log = logging.getLogger(__name__)

LAST_NAME = "last.ckpt"
# Lightning's ModelCheckpoint fills this in; with auto_insert_metric_name=False the names
# are the guide's ``phase2-epoch=01-train_loss=2.3456.ckpt``.
EPOCH_FILENAME = "phase2-epoch={epoch:02d}-train_loss={train_loss_epoch:.4f}"
EPOCH_NAME_PATTERN = r"phase2-epoch=\d{2,}-train_loss=\d+\.\d{4}(-v\d+)?\.ckpt"


# ----------------------------------------------------------------------------- paths


def resolve_newest(pattern: str, key: str, how_to_make: str) -> Path:
    """The file ``pattern`` names, or the newest (by mtime) of the files a glob matches.

    Raises:
        ConfigError: nothing matches; the one line names ``key`` and ``how_to_make``.
    """
    path = Path(pattern).expanduser()
    if glob.has_magic(pattern):
        matches = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    else:
        matches = [path] if path.is_file() else []
    if not matches:
        raise ConfigError(f"{key}: no file matches '{pattern}'; {how_to_make}")
    # Ties (same mtime) broken by name so the choice never depends on directory order.
    newest = max(matches, key=lambda p: (p.stat().st_mtime_ns, str(p)))
    if len(matches) > 1:
        log.info("%s: %s (newest of %d matches of '%s')", key, newest, len(matches), pattern)
    return newest


def resolve_aligner(pattern: str, config_path: str | None = None) -> Path:
    """``phase1_checkpoint_path`` (a path or a glob) → the aligner.pt to use."""
    how = (
        "train a Phase 1 aligner first: "
        f"`purrsight train phase1 --config {config_path or '<config.yaml>'}` "
        "(it writes <phase1.output_dir>/<run>/aligner.pt)"
    )
    return resolve_newest(pattern, "phase1_checkpoint_path", how)


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> Path | None:
    """``--resume`` (``"last"`` = ``<checkpoint_dir>/last.ckpt``, or a path) → a file."""
    if resume is None:
        return None
    path = checkpoint_dir / LAST_NAME if resume == "last" else Path(resume).expanduser()
    if not path.is_file():
        others = (
            sorted(p.name for p in checkpoint_dir.glob("*.ckpt")) if checkpoint_dir.is_dir() else []
        )
        hint = f"; checkpoints there: {', '.join(others)}" if others else ""
        raise ConfigError(f"--resume: no checkpoint at {path}{hint}")
    return path


def restart_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint a restarted job continues from: ``last.ckpt`` (every epoch end), or
    None before the first one. Only this job's files are there: a fresh run moves earlier
    runs' checkpoints away.

    Not an ``emergency-step=<n>.ckpt``: after a worker died, the others write it from
    wherever the failed collective left them (e.g. half-way through an epoch end), a state
    no resume test covers under DDP; it stays there for a deliberate ``--resume PATH``."""
    path = checkpoint_dir / LAST_NAME
    return path if path.is_file() else None


def emergency_path(checkpoint_dir: Path, step: int) -> Path:
    """``<checkpoint_dir>/emergency-step=<step>.ckpt``."""
    return checkpoint_dir / f"emergency-step={step}.ckpt"


# ----------------------------------------------------------------------------- writing


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`purrsight.files.atomic_write` with ``durable=True``
    (flush + fsync of the file, ``os.replace``, fsync of the folder): a crash, ``kill -9``
    or power loss mid-write never leaves a truncated checkpoint under the final name, and
    the previous file stays loadable until the new one is complete on disk."""
    atomic_write(path, lambda handle: torch.save(obj, handle), durable=True)


def remove_stale_temps(checkpoint_dir: Path) -> list[Path]:
    """Delete the temp files of checkpoint writes a killed process never finished
    (``.<name>.<pid>.tmp``); each is logged. Call before this job writes any checkpoint."""
    stale = (
        sorted(checkpoint_dir.glob(f".*.ckpt.*{TEMP_SUFFIX}")) if checkpoint_dir.is_dir() else []
    )
    for path in stale:
        log.warning("removing %s: a checkpoint write that never finished (process killed)", path)
        path.unlink(missing_ok=True)
    return stale


# ----------------------------------------------------------------------------- contents


def is_trainable_key(key: str) -> bool:
    """A ``state_dict`` key a Phase 2 checkpoint may hold (LightningModule names)."""
    return key.startswith("model.projectors.") or (key.startswith("model.llm.") and ".lora_" in key)


def check_trainable_only(state: dict[str, torch.Tensor]) -> None:
    """Raise ValueError if ``state`` holds anything but projector / LoRA tensors."""
    other = sorted(k for k in state if not is_trainable_key(k))
    if other:
        raise ValueError(f"checkpoint holds {len(other)} non-trainable tensors, e.g. {other[:3]}")


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from (dropout: torch), as plain values
    that load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state` (a missing CUDA part is left as it is)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def archive_previous_run(checkpoint_dir: Path) -> Path | None:
    """Move an earlier run's checkpoints into ``checkpoint_dir/previous/<time>/``.

    A fresh (not resumed) run must own ``last.ckpt``: otherwise Lightning writes
    ``last-v1.ckpt`` beside the old one and ``--resume`` would pick up the old run.
    Nothing is deleted; the move is logged. Returns the archive folder, or None.
    """
    old = sorted(checkpoint_dir.glob("*.ckpt")) if checkpoint_dir.is_dir() else []
    if not old:
        return None
    stamp = datetime.fromtimestamp(max(p.stat().st_mtime for p in old)).strftime("%Y%m%d-%H%M%S")
    archive = checkpoint_dir / "previous" / stamp
    archive.mkdir(parents=True, exist_ok=True)
    for path in old:
        os.replace(path, archive / path.name)
    log.warning("moved %d checkpoints of an earlier run to %s", len(old), archive)
    return archive
