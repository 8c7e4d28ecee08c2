"""Phase 1 aligner: per-modality heads into one shared space, trained with InfoNCE.

Shapes: b = batch, d_m = a modality's encoder feature size, e = shared embed size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from purrsight.files import atomic_write
from purrsight.models.weights import load_weights
from purrsight.vocabulary import AUDIO, IMAGE, MODALITIES, TEXT

# The pairs contrasted with each other; image–audio ties the two perceptual sides
# together so a sample with no text side still aligns.
PAIRS: tuple[tuple[str, str], ...] = ((IMAGE, TEXT), (AUDIO, TEXT), (IMAGE, AUDIO))
MAX_LOGIT_SCALE = 100.0  # as in CLIP: caps 1/temperature so the logits cannot blow up


class ProjectionHead(nn.Module):
    """Linear–GELU–Dropout–Linear from one encoder's features to the shared space."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[b, d_m] → [b, e], L2-normalised."""
        return F.normalize(self.net(features), dim=-1)


class Aligner(nn.Module):
    """One head per modality plus a learnable temperature."""

    def __init__(
        self,
        input_dims: dict[str, int],
        embed_dim: int = 512,
        hidden_dim: int = 1024,
        dropout: float = 0.1,
        temperature_init: float = 0.07,
    ) -> None:
        super().__init__()
        unknown = set(input_dims) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; allowed: {MODALITIES}")
        self.input_dims = dict(input_dims)
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.heads = nn.ModuleDict(
            {m: ProjectionHead(d, hidden_dim, embed_dim, dropout) for m, d in input_dims.items()}
        )
        # log(1/T), as CLIP parameterises it, so the optimiser works on a scale-free value.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale().detach())

    def scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities: 1/T, capped at MAX_LOGIT_SCALE."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{modality: [b, d_m]} → {modality: [b, e]} on the unit sphere."""
        return {m: self.heads[m](x) for m, x in features.items() if m in self.heads}

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "input_dims": self.input_dims,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
        }


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned unit vectors.

    Args:
        a, b: [n, e]; row i of ``a`` and row i of ``b`` are a positive pair, every
            other row is a negative.
        scale: scalar, 1/temperature.
    Returns:
        scalar: mean of the a→b and b→a cross-entropies with diagonal targets.
    """
    logits = scale * a @ b.t()
    targets = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def contrastive_loss(
    embeds: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    scale: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCE over every pair of modalities, on the samples that have both.

    Args:
        embeds: {modality: [b, e]}; rows of absent modalities hold anything.
        present: {modality: [b] bool}.
        scale: scalar, 1/temperature.
    Returns:
        (mean loss over the pairs that had at least 2 samples, {"image_text": loss, …}).
    """
    losses: dict[str, torch.Tensor] = {}
    for first, second in PAIRS:
        if first not in embeds or second not in embeds:
            continue
        both = present[first] & present[second]
        if int(both.sum()) < 2:  # one sample has no negatives to contrast with
            continue
        losses[f"{first}_{second}"] = info_nce(embeds[first][both], embeds[second][both], scale)
    if not losses:
        anchor = next(iter(embeds.values()))
        return anchor.sum() * 0.0, losses
    return torch.stack(list(losses.values())).mean(), losses


# ----------------------------------------------------------------------------- save / load


def save_aligner(run_dir: str | Path, aligner: Aligner, meta: dict[str, Any]) -> Path:
    """Write ``aligner.pt`` (a plain tensor dict) and ``aligner.json`` (everything
    needed to rebuild the heads, plus ``meta``). Both are written to a temporary
    file first and renamed, so a crash never leaves a half-written file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in aligner.state_dict().items()}
    info = {**meta, **aligner.hyperparameters(), "temperature": aligner.temperature}
    pt_path, json_path = run_dir / "aligner.pt", run_dir / "aligner.json"
    atomic_write(pt_path, lambda handle: torch.save(weights, handle))
    atomic_write(json_path, json.dumps(info, indent=2, sort_keys=True))
    return pt_path


def load_aligner(path: str | Path) -> tuple[Aligner, dict[str, Any]]:
    """Rebuild an :class:`Aligner` from ``aligner.pt`` and the ``aligner.json`` beside it.

    The weights load with ``weights_only=True`` (a pickle holding code is refused with a
    :class:`~purrsight.models.weights.WeightsError`) and strictly: a missing or extra key
    is an error, never silently ignored.
    """
    path = Path(path)
    info_path = path.with_name("aligner.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: aligner checkpoint not found")
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: aligner.json missing beside {path.name}")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    aligner = Aligner(
        input_dims={k: int(v) for k, v in info["input_dims"].items()},
        embed_dim=int(info["embed_dim"]),
        hidden_dim=int(info["hidden_dim"]),
        dropout=float(info["dropout"]),
    )
    state = load_weights(path, "aligner checkpoint")
    aligner.load_state_dict(state, strict=True)
    return aligner, info
