"""What the checks share: the resolved config, the built parts, one real batch.

Each check fills in what later checks need (``config`` and ``plan`` by check 1, the
models by check 2, ``batch`` by check 4); a check whose prerequisite failed never runs,
so a check only reads fields its prerequisites set.

Shapes: b = batch, s = sequence length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class CheckFailed(Exception):
    """A check found a problem; the message is the one-line reason shown to the user."""


class CheckSkipped(Exception):
    """A check cannot run for a reason other than a failed prerequisite (e.g. disabled)."""


@dataclass
class Hooks:
    """Injection seams for tests that break one part on purpose (None: nothing happens)."""

    after_build: Callable[[ValidationContext], None] | None = None
    """Called at the end of Model Initialization with the built parts in the context."""
    trainer_callbacks: list[Any] = field(default_factory=list)
    """Extra Lightning callbacks for the Short Training Run's Trainer."""


@dataclass
class ValidationContext:
    """State shared by the checks of one validation run."""

    config_path: str | None
    overrides: list[str]
    workdir: Path
    """A temporary folder, removed after the run: nothing lands in the user's outputs."""
    quick: bool = False
    hooks: Hooks = field(default_factory=Hooks)
    device: torch.device = field(
        default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    # check 1
    config: Any = None
    plan: Any = None
    train: list[Any] = field(default_factory=list)
    val: list[Any] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    # check 2
    aligner: Any = None
    aligner_info: dict[str, Any] = field(default_factory=dict)
    features: Any = None
    """The :class:`~purrsight.features.FeatureSource` (no cache) checks 2-4 encode with."""
    encoders: dict[str, Any] = field(default_factory=dict)
    """Its encoders, built: {modality: FrozenEncoder}."""
    model: Any = None
    tokenizer: Any = None
    # check 4
    batch: Any = None
    """A collated :class:`~purrsight.data.instruction.Batch` of real samples ([b, s])."""
    batch_samples: list[Any] = field(default_factory=list)
    # check 5
    forward_loss: float | None = None
    """The batch's loss in eval mode, before any training step."""
    # check 8
    mlflow_store: str | None = None
    """The temporary tracking store check 8 wrote to (created and migrated already)."""
    mlflow_experiment: str | None = None
    # verbose output: extra lines per check
    notes: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        """A detail line shown under the check's result with ``--verbose``."""
        self.notes.append(line)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast training uses for ``precision`` (none for "32"), decided as
        training decides it (check 1 already resolved "auto"; resolving again is a no-op)."""
        from purrsight.precision import resolve_precision

        dtype = resolve_precision(self.config.precision, self.device.type).autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)
