"""Loading ``.pt`` / ``.pth`` / ``.ckpt`` files without running code from them.

Every weights and checkpoint load in Purr-Sight goes through :func:`load_weights`
(``torch.load(weights_only=True)``: tensors, containers and plain values only; any other
pickled global is refused before it is called), or through safetensors / Hugging Face
``from_pretrained``. A refused or unreadable file is one :class:`WeightsError` line that
names the file, never the multi-paragraph advice torch attaches to it.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


class WeightsError(ValueError):
    """A weights or checkpoint file that was refused or could not be read; names the file."""


def load_weights(path: str | Path, what: str = "weights file", safe_globals: Sequence = ()) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``.

    Args:
        what: how the message names the file (e.g. ``"aligner checkpoint"``).
        safe_globals: extra pickle globals the file may name (see
            ``torch.serialization.safe_globals``), e.g. numpy scalar types.

    Raises:
        WeightsError: the file is missing, not a torch file, or holds pickled objects other
            than tensors and plain values (which could run code when loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused to load this {what}: it holds pickled objects other than tensors "
            f"and plain values, which could run code ({_offender(err)}); only weights-only "
            "files are loaded"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged file makes torch raise many types
        first = (str(err).strip().splitlines() or [""])[0]
        raise WeightsError(
            f"{path}: not a readable {what} ({type(err).__name__}: {first})"
        ) from None


def _offender(err: pickle.UnpicklingError) -> str:
    """The global torch's weights-only unpickler refused, picked out of its long message
    (e.g. ``unsupported GLOBAL posix.system``)."""
    for line in str(err).splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith("WeightsUnpickler error:"):
            line = line.removeprefix("WeightsUnpickler error:").removeprefix("Trying to load")
            return line.strip().split(" whose ")[0].rstrip(".")
    return "not a weights-only pickle"


CHECKPOINT_FORMAT = "purrsight-phase2-trainable-v1"
"""``hyper_parameters["format"]`` of a Phase 2 checkpoint (trainable weights only)."""


def read_phase2_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Phase 2 checkpoint, loaded with ``weights_only=True`` (it holds only tensors and
    plain values), after checking it is one. A pickle that would run code, or a damaged
    file, is a one-line :class:`~purrsight.config.ConfigError` naming the file."""
    from purrsight.config import ConfigError

    try:
        checkpoint = load_weights(path, "checkpoint")
    except WeightsError as err:  # refused pickle or damaged file: one line naming it
        raise ConfigError(str(err)) from None
    meta = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a Purr-Sight Phase 2 checkpoint ({CHECKPOINT_FORMAT})")
    return checkpoint
