"""Phase 2 projectors: one aligned feature vector → ``k`` soft tokens in the LLM's space.

Shapes: b = batch, e = aligned (shared-space) feature size, k = soft tokens per modality,
d = the LLM's hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

from purrsight.vocabulary import MODALITIES


class ModalityProjector(nn.Module):
    """LayerNorm–Linear–GELU–Linear from one aligned feature to ``num_tokens`` LLM input embeddings.

    The second layer emits all ``k`` tokens at once (``k * d`` outputs), so each soft token
    is a different learned view of the same feature rather than ``k`` copies.
    """

    def __init__(
        self,
        in_dim: int = 512,
        llm_dim: int = 896,
        num_tokens: int = 4,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if min(in_dim, llm_dim, num_tokens) <= 0:
            raise ValueError(
                f"in_dim, llm_dim and num_tokens must be positive, got {in_dim}, {llm_dim}, "
                f"{num_tokens}"
            )
        self.in_dim = in_dim
        self.llm_dim = llm_dim
        self.num_tokens = num_tokens
        self.hidden_dim = hidden_dim or llm_dim
        self.net = nn.Sequential(
            # Aligned features are unit vectors (each entry ~1/sqrt(e)); without the norm
            # the soft tokens start ~60x smaller than SmolLM2's token embeddings (row norm
            # 0.05 vs 3.2) and the LLM ignores them for many steps. With it they start at
            # the embeddings' scale.
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, self.hidden_dim),
            nn.GELU(),
            nn.Linear(self.hidden_dim, num_tokens * llm_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[b, e] → [b, k, d]."""
        if features.dim() != 2 or features.shape[-1] != self.in_dim:
            raise ValueError(
                f"expected features of shape [b, {self.in_dim}], got {list(features.shape)}"
            )
        return self.net(features).view(features.shape[0], self.num_tokens, self.llm_dim)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, llm_dim={self.llm_dim}, num_tokens={self.num_tokens}"


class Projectors(nn.ModuleDict):
    """A :class:`ModalityProjector` per modality (``"image"``, ``"audio"``, ``"text"``),
    all with the same ``in_dim``, ``llm_dim`` and ``num_tokens``."""

    def __init__(
        self,
        modalities: tuple[str, ...] | list[str] = MODALITIES,
        in_dim: int = 512,
        llm_dim: int = 896,
        num_tokens: int = 4,
        hidden_dim: int | None = None,
    ) -> None:
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown or not modalities:
            raise ValueError(
                f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}"
            )
        super().__init__(
            {m: ModalityProjector(in_dim, llm_dim, num_tokens, hidden_dim) for m in modalities}
        )
        self.in_dim = in_dim
        self.llm_dim = llm_dim
        self.num_tokens = num_tokens

    @property
    def modalities(self) -> list[str]:
        return list(self.keys())

    def project(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{modality: [b, e]} → {modality: [b, k, d]}; raises on a modality with no head."""
        missing = sorted(set(features) - set(self.keys()))
        if missing:
            raise KeyError(f"no projector for modalities {missing}; have {self.modalities}")
        return {m: self[m](x) for m, x in features.items()}
