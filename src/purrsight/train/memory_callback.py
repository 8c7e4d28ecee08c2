"""A Lightning callback that gives freed heap memory back after every training batch."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from purrsight.memory import release_freed_memory


class ReleaseFreedMemory(Callback):
    """``malloc_trim`` before training, after each training batch and each validation pass.

    Batches of new lengths leave freed blocks scattered through glibc's heap; without a
    trim the process's resident size creeps up through an epoch (measured on the demo:
    2.8 GB at the first step, 3.4 GB by the last). A trim costs milliseconds.
    """

    def on_train_start(self, trainer, pl_module) -> None:
        release_freed_memory()  # model building and the weight conversion's leftovers

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, idx: int) -> None:
        release_freed_memory(collect=False)

    def on_validation_end(self, trainer, pl_module) -> None:
        release_freed_memory(collect=False)
