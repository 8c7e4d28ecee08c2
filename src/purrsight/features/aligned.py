"""Aligned features: the frozen Phase 1 aligner heads applied to raw encoder features.

:func:`apply_head` is the one place a frozen head runs (Phase 2's features, the feature
cache's ``aligned`` level, the Predictor).
Shapes: n = samples, d_m = a modality's encoder feature size, e = aligned feature size.
"""

from __future__ import annotations

import torch
from torch import nn

from purrsight.features.raw import FeatureTable
from purrsight.models.modes import eval_mode


class AlignedFeatures(FeatureTable):
    """The aligner's unit vectors of n samples: ``features`` is {modality: [n, e] float32}
    (rows of absent modalities hold nothing meaningful), ``present`` {modality: [n] bool}."""

    def row(self, i: int) -> dict[str, torch.Tensor]:
        """Sample ``i``'s present features: {modality: [e]}."""
        return {m: f[i] for m, f in self.features.items() if bool(self.present[m][i])}


@torch.no_grad()
def apply_head(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """One frozen aligner head in eval mode (no dropout), its mode restored after:
    ``[n, d_m]`` (any device) → ``[n, e]`` float32 unit vectors on the CPU."""
    device = next(head.parameters()).device
    with eval_mode(head):
        return head(features.to(device)).float().cpu()
