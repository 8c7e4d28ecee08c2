"""FeatureSource: the one way from media to frozen features.

    source = FeatureSource.from_config(config, MODALITIES)
    table = source.raw(samples, "train")                # FeatureTable {m: [n, d_m]}
    labels = source.texts(["a happy cat", "a cat in pain"])      # [k, d_text]
    aligned = source.aligned(samples, aligner, "val")   # AlignedFeatures {m: [n, e]}
    source.release()                                    # the encoders' memory back

Phase 1, Phase 2, ``purrsight cache-features``, ``purrsight validate`` and the Predictor all
go through it. With a feature cache each feature is read from it where it is there and an
encoder is built only for the rest (a full cache builds none); without one every sample
goes once through the encoders (and the aligner heads). Callers never branch on the cache:
it is this class's business.

Shapes: n = samples, d_m = a modality's encoder feature size, e = aligned feature size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from purrsight.config import Config, ConfigError, EncoderConfig, MediaConfig
from purrsight.data.manifest import Sample
from purrsight.features.aligned import AlignedFeatures, apply_head
from purrsight.features.cache import FeatureCache
from purrsight.features.encoders import LazyEncoders
from purrsight.features.keys import content_key, namespace, tensor_digest, text_key
from purrsight.features.raw import FeatureTable, encode_samples
from purrsight.precision import encoder_dtype

if TYPE_CHECKING:
    from purrsight.models.aligner import Aligner

log = logging.getLogger(__name__)

Column = tuple[torch.Tensor, torch.Tensor]
"""One modality's features of n samples: (``[n, d]`` float32, ``[n]`` bool present)."""


class FeatureSource:
    """Frozen encoders (built on first use) + media limits + an optional feature cache.

    Args:
        encoders: {modality: its encoder's config}: the modalities this source serves.
        media: decoding limits (part of the cache key: what they refuse is never served).
        cache: the feature cache, or None to compute every feature.
        batch_size: samples per encoder call.
        device: where the encoders run (None: the CPU).
        compute_dtype: what the encoders compute in (float32, or bfloat16 where the
            hardware does it natively; part of the cache key).
    """

    def __init__(
        self,
        encoders: Mapping[str, EncoderConfig],
        media: MediaConfig,
        cache: FeatureCache | None = None,
        batch_size: int = 16,
        device: torch.device | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.encoders = LazyEncoders(encoders, device, compute_dtype)
        self.media = media
        self.cache = cache
        self.batch_size = batch_size

    @classmethod
    def from_config(
        cls, config: Config, modalities: Sequence[str], *, cache: bool | None = None
    ) -> FeatureSource:
        """The config's encoders for ``modalities``, its media limits, its encoder batch size
        and, when ``cache`` (default: ``config.feature_cache``), the cache at
        ``feature_cache_dir``. Every identity is computed now, so a wrong encoder path
        stops the job before any encoding.

        Raises:
            ConfigError: ``feature_cache_dir`` is not a folder.
            ValueError: one line naming the ``encoders.<modality>`` key.
        """
        use_cache = config.feature_cache if cache is None else cache
        store = FeatureCache(Path(config.feature_cache_dir)) if use_cache else None
        configs = {m: getattr(config.encoders, m) for m in modalities}
        dtype = encoder_dtype(config.precision)
        source = cls(configs, config.media, store, config.phase1.encode_batch_size, None, dtype)
        for modality in modalities:
            source.identity(modality)
        return source

    # ------------------------------------------------------------------ encoders

    @property
    def modalities(self) -> list[str]:
        return self.encoders.modalities

    def identity(self, modality: str) -> str:
        """``modality``'s encoder identity, from its weight files (nothing is loaded)."""
        return self.encoders.identity(modality)

    def encoder(self, modality: str) -> Any:
        """The built :class:`~purrsight.models.encoders.FrozenEncoder` (built once)."""
        return self.encoders.get(modality)

    def check_trained_with(
        self, aligner_info: dict[str, Any], modalities: Sequence[str] | None = None
    ) -> None:
        """Refuse an encoder other than the one the aligner (``aligner.json``'s ``encoders``)
        was trained on: it would feed the heads meaningless features.

        Raises:
            ConfigError: naming ``encoders.<modality>`` and both identities.
        """
        trained = aligner_info.get("encoders", {})
        for modality in modalities or self.modalities:
            identity = self.identity(modality)
            if trained.get(modality) != identity:
                raise ConfigError(
                    f"encoders.{modality}: the config's encoder ({identity}) is not the one "
                    f"the aligner was trained with ({trained.get(modality)}); use the Phase 1 "
                    "run's encoders (its config.yaml) or train Phase 1 again"
                )

    def release(self) -> None:
        """Drop the built encoders (their memory goes back to the LLM); they are built
        again if asked for."""
        self.encoders.release()

    # ------------------------------------------------------------------ features

    def raw(
        self,
        samples: Sequence[Sample],
        desc: str = "encode",
        modalities: Sequence[str] | None = None,
    ) -> FeatureTable:
        """Encoder features of ``samples`` for ``modalities`` (default: all of this source's):
        {modality: ``[n, d_m]``}, zero rows where a sample lacks the modality.

        Raises:
            MediaError: naming the media file, its problem and the sample's ``file:line``.
        """
        chosen = list(modalities or self.modalities)
        if self.cache is None:
            encoders = {m: self.encoder(m) for m in chosen}
            return encode_samples(samples, encoders, self.media, self.batch_size, desc)
        return _table(FeatureTable, samples, chosen, lambda m: self._cached_raw(samples, m, desc))

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """The text encoder's features of plain strings (label descriptions): ``[k, d_text]``."""

        def compute(rows: list[int]) -> torch.Tensor:
            with torch.no_grad():
                return self.encoder("text")([texts[i] for i in rows]).float()

        if self.cache is None:
            return compute(list(range(len(texts))))
        ns = self._namespace("encoder", "text")
        features, _ = self.cache.fill(ns, [text_key(t) for t in texts], compute, lambda: 0)
        return features

    def aligned(
        self,
        samples: Sequence[Sample],
        aligner: Aligner,
        desc: str = "align",
        modalities: Sequence[str] | None = None,
    ) -> AlignedFeatures:
        """The frozen aligner heads' unit vectors of ``samples``: {modality: ``[n, e]``}.

        Without a cache the heads run on every row (absent ones too: they hold nothing
        meaningful); with one, absent rows are zero and a miss is aligned from the cache's
        ``encoder`` level, which runs the encoder only on its own misses."""
        chosen = list(modalities or self.modalities)
        if self.cache is None:
            table = self.raw(samples, desc, chosen)
            heads = {m: apply_head(aligner.heads[m], x) for m, x in table.features.items()}
            return AlignedFeatures(table.ids, heads, table.present)
        return _table(
            AlignedFeatures,
            samples,
            chosen,
            lambda m: self._cached_aligned(samples, m, aligner, desc),
        )

    def aligned_splits(
        self,
        splits: Sequence[tuple[str, Sequence[Sample]]],
        aligner: Aligner,
        aligner_info: dict[str, Any],
        modalities: Sequence[str] | None = None,
    ) -> list[AlignedFeatures | None]:
        """:meth:`aligned` of each named split (None for an empty one), once the encoders
        are checked against the ones the aligner was trained on."""
        self.check_trained_with(aligner_info, modalities)
        return [
            self.aligned(samples, aligner, name, modalities) if samples else None
            for name, samples in splits
        ]

    # ------------------------------------------------------------------ the cache

    def log_use(self) -> None:
        """One log line with the cache's counts per level and the encoders that had to be
        loaded (nothing without a cache)."""
        if self.cache is None:
            return
        log.info(
            "feature cache %s: encoder %s, aligned %s; encoders loaded: %s",
            self.cache.root,
            self.cache.stats["encoder"].as_dict(),
            self.cache.stats["aligned"].as_dict(),
            ", ".join(self.encoders.built) or "none",
        )

    def cache_usage(self) -> dict[str, Any]:
        """Counts per level (hits, computed, corrupt, bytes written), the cache's entries and
        size on disk, and the encoders that had to be loaded."""
        if self.cache is None:
            raise ValueError("this feature source has no cache")
        entries, size, allocated = self.cache.size()
        return {
            "encoder": self.cache.stats["encoder"].as_dict(),
            "aligned": self.cache.stats["aligned"].as_dict(),
            "entries": entries,
            "size_mb": round(size / 2**20, 2),
            "disk_mb": round(allocated / 2**20, 2),
            "encoders_loaded": self.encoders.built,
        }

    def _namespace(self, level: str, modality: str, head_digest: str | None = None):
        dtype = str(self.encoders.compute_dtype).removeprefix("torch.")
        identity = self.identity(modality)
        return namespace(level, modality, identity, self.media, head_digest, dtype)

    def _cached_raw(
        self,
        samples: Sequence[Sample],
        modality: str,
        desc: str,
        keys: Sequence[str | None] | None = None,
    ) -> Column:
        """One modality's encoder features through the cache. ``keys``: the samples'
        content keys when the caller has them already."""
        ns = self._namespace("encoder", modality)
        if keys is None:
            keys = [content_key(s, modality, self.media) for s in samples]

        def compute(rows: list[int]) -> torch.Tensor:
            chosen = [samples[i] for i in rows]
            encoders = {modality: self.encoder(modality)}
            table = encode_samples(chosen, encoders, self.media, self.batch_size, desc)
            return table.features[modality]

        return self.cache.fill(ns, keys, compute, lambda: self.encoder(modality).dim)

    def _cached_aligned(
        self, samples: Sequence[Sample], modality: str, aligner: Aligner, desc: str
    ) -> Column:
        """One modality's aligned features through the cache (keyed by the head's weights
        too); a miss is aligned from :meth:`_cached_raw`."""
        head = aligner.heads[modality]
        digest = tensor_digest(head.state_dict())
        ns = self._namespace("aligned", modality, digest)
        keys = [content_key(s, modality, self.media) for s in samples]

        def compute(rows: list[int]) -> torch.Tensor:
            chosen = [samples[i] for i in rows]
            raw, _ = self._cached_raw(chosen, modality, desc, [keys[i] for i in rows])
            return apply_head(head, raw)

        return self.cache.fill(ns, keys, compute, lambda: aligner.embed_dim)


def _table(
    kind: type[FeatureTable],
    samples: Sequence[Sample],
    modalities: Sequence[str],
    column: Callable[[str], Column],
) -> Any:
    """A ``kind`` (FeatureTable / AlignedFeatures) of ``column(m)`` for each modality."""
    columns = {m: column(m) for m in modalities}
    return kind(
        [s.id for s in samples],
        {m: c[0] for m, c in columns.items()},
        {m: c[1] for m, c in columns.items()},
    )
