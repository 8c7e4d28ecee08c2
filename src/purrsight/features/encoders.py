"""The frozen encoders of a :class:`~purrsight.features.FeatureSource`, built on first use.

An encoder's identity (weights hash, pooling, max_length) comes from its weight files
without loading it, so the feature cache can be read before, and instead of, building the
encoder: a run whose features are all cached loads none (:attr:`LazyEncoders.built` stays
empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from purrsight.config import EncoderConfig


class LazyEncoders:
    """One frozen encoder per modality of ``configs``, built only when asked for.

    Args:
        configs: {modality: its encoder's config}.
        device: where a built encoder is moved (None: where it was built, the CPU).
        compute_dtype: what the encoders compute in (float32, or bfloat16 autocast where
            the hardware does it natively: see :mod:`purrsight.precision`).
    """

    def __init__(
        self,
        configs: Mapping[str, EncoderConfig],
        device: torch.device | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.configs = dict(configs)
        self.device = device
        self.compute_dtype = compute_dtype
        self._identities: dict[str, str] = {}
        self._built: dict[str, Any] = {}

    @property
    def modalities(self) -> list[str]:
        return list(self.configs)

    @property
    def built(self) -> list[str]:
        """Modalities whose encoder was loaded."""
        return list(self._built)

    def identity(self, modality: str) -> str:
        """The identity :func:`~purrsight.models.encoders.build_encoder` would give, from the
        weight files only (hashed once per file, then remembered)."""
        if modality not in self._identities:
            from purrsight.models.encoders import encoder_identity

            self._identities[modality] = encoder_identity(modality, self.configs[modality])
        return self._identities[modality]

    def get(self, modality: str) -> Any:
        """The built :class:`~purrsight.models.encoders.FrozenEncoder` for ``modality``."""
        if modality not in self._built:
            # Imported here, not at the top: tests swap build_encoder to prove it unused.
            from purrsight.models.encoders import build_encoder

            expected = self.identity(modality)
            encoder = build_encoder(modality, self.configs[modality])
            if encoder.identity != expected:
                raise RuntimeError(
                    f"encoders.{modality}: its weights changed while running "
                    f"({expected} → {encoder.identity})"
                )
            encoder.compute_dtype = self.compute_dtype
            self._built[modality] = encoder if self.device is None else encoder.to(self.device)
        return self._built[modality]

    def release(self) -> None:
        """Drop the built encoders (their memory goes back to the LLM)."""
        self._built.clear()
