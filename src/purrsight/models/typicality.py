"""How typical an input's frozen features are of the training data, per modality.

A Gaussian in the top ``k`` principal directions of the training features plus an
isotropic one in the rest: the score is the squared Mahalanobis distance in the principal
subspace plus the residual's squared norm over its mean variance, divided by ``k + 1`` so
a typical training point scores about 1. A threshold chosen on the validation split (its
99th percentile) separates "in range" from "unlike anything trained on".

Shapes: n = samples, d = the encoder's feature size, k = principal directions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

COMPONENTS = 32
VAL_QUANTILE = 0.99
"""About this share of validation inputs is in range per modality (0.95 left one in ten
demo samples with both inputs out of range in one of them; non-cat photos and sounds score
1.4-8 times the 95 % threshold, so they stay out)."""


class GaussianTypicality(nn.Module):
    """One modality's model: mean, principal directions and variances, residual variance,
    and the in-range threshold."""

    def __init__(self, dim: int, components: int = COMPONENTS) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("directions", torch.zeros(components, dim))
        self.register_buffer("variances", torch.ones(components))
        self.register_buffer("residual_variance", torch.ones(()))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """[n, d] -> [n]: about 1 for a typical training point, large for a far one."""
        centred = x.float() - self.mean
        z = centred @ self.directions.T  # [n, k]
        residual = centred - z @ self.directions
        inside = (z.pow(2) / self.variances).sum(dim=1)
        outside = residual.pow(2).sum(dim=1) / self.residual_variance
        return (inside + outside) / (self.directions.shape[0] + 1)

    @torch.no_grad()
    def fit(self, train: torch.Tensor, val: torch.Tensor, quantile: float = VAL_QUANTILE):
        """Fit on ``train`` [n, d]; the threshold is ``val``'s [m, d] ``quantile``."""
        train = train.double()
        mean = train.mean(dim=0)
        centred = train - mean
        k = min(self.directions.shape[0], centred.shape[0] - 1, centred.shape[1])
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        variances = singular[:k].pow(2) / max(len(train) - 1, 1)
        residual = centred - centred @ vh[:k].T @ vh[:k]
        # the mean squared residual norm: a typical point's outside term is about 1
        residual_variance = residual.pow(2).sum(dim=1).mean()
        self.mean.copy_(mean.float())
        self.directions.zero_()
        self.directions[:k].copy_(vh[:k].float())
        self.variances.fill_(1.0)
        self.variances[:k].copy_(variances.clamp_min(1e-8).float())
        self.residual_variance.fill_(float(residual_variance.clamp_min(1e-12)))
        self.threshold.fill_(float(torch.quantile(self.score(val), quantile)))
        return self


class Typicality(nn.ModuleDict):
    """A :class:`GaussianTypicality` per modality."""

    def __init__(self, dims: Mapping[str, int], components: int = COMPONENTS) -> None:
        super().__init__({m: GaussianTypicality(d, components) for m, d in dims.items()})

    @torch.no_grad()
    def in_range(
        self, raw: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{modality: ([b] score / threshold, [b] in range)} for present rows (absent rows:
        ratio 0, in range)."""
        out = {}
        for modality, model in self.items():
            ratio = model.score(raw[modality]) / model.threshold
            ratio = torch.where(present[modality].bool(), ratio, torch.zeros_like(ratio))
            out[modality] = (ratio, ratio <= 1.0)
        return out
