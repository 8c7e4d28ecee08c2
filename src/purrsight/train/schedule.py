"""Learning-rate schedules as LambdaLR multipliers (their state resumes exactly)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_then_decay(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, decay: str = "cosine"
) -> LambdaLR:
    """Linear warmup from 0 over ``warmup_steps``, then ``cosine`` or ``linear`` decay to 0
    at ``total_steps``."""
    if decay not in ("cosine", "linear"):
        raise ValueError(f"decay must be 'cosine' or 'linear', got {decay!r}")
    total_steps = max(total_steps, 1)
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if decay == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, multiplier)
