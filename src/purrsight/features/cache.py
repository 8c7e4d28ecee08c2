"""On-disk cache of frozen features, keyed by content hash and model identity.

Encoders and the Phase 1 aligner are frozen, so a feature is a pure function of
(media bytes, encoder identity, decoding limits) and, once aligned, of the aligner head's
weights too. Two levels share one folder:

* ``encoder`` — raw encoder outputs ``[d_m]``: Phase 1 trains the aligner on these.
* ``aligned`` — the aligner head's unit vectors ``[e]``: what Phase 2 trains on.

Layout::

    <root>/<level>/<modality>-<namespace digest>/identity.json      what the key hashes
    <root>/<level>/<modality>-<namespace digest>/<ab>/<sha256>.safetensors

The namespace digest hashes the encoder identity (weights hash, pooling, max_length), the
media limits and, for ``aligned``, the head's weights; ``<sha256>`` is the media file's
bytes (or the text's). Changing any of them gives another path, so nothing stale is read.
One small file per entry: writes are atomic (temporary file + ``os.replace``), concurrent
writers (DDP ranks) cannot tear each other's entries, and tens of thousands of samples
spread over 256 sub-folders. Every entry carries its key and a sha256 of its values: a
truncated or corrupted entry is detected, logged, deleted and recomputed, never used.
No pickle: entries are safetensors.

Shapes: n = samples, d = feature size (d_m for ``encoder``, e for ``aligned``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from purrsight.config import ConfigError, EncodersConfig, MediaConfig
from purrsight.data.manifest import Sample
from purrsight.data.media import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, MediaError
from purrsight.data.media import _check_file as check_media_file
from purrsight.features.raw import FeatureTable, encode_samples
from purrsight.hashing import file_sha256

log = logging.getLogger(__name__)

FORMAT = "purrsight-feature-v1"
LEVELS = ("encoder", "aligned")
SUFFIX = ".safetensors"


# ----------------------------------------------------------------------------- keys


def text_key(text: str) -> str:
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


_FILE_CHECKS = {"image": (IMAGE_EXTENSIONS, "image"), "audio": (AUDIO_EXTENSIONS, "audio")}


def content_key(sample: Sample, modality: str, media: MediaConfig) -> str | None:
    """The cache key of ``sample``'s ``modality`` input: sha256 of the media file's bytes
    (of the caption for ``text``); None when the sample lacks the modality.

    The file passes the same checks as before decoding (type, existence, size), so a cache
    hit never lets through a file that decoding would refuse.
    Raises:
        MediaError: naming the file, the reason and the sample's ``file:line``.
    """
    if modality == "text":
        return text_key(sample.text)
    path = getattr(sample, modality)
    if path is None:
        return None
    try:
        if modality in _FILE_CHECKS:
            allowed, kind = _FILE_CHECKS[modality]
            check_media_file(path, allowed, kind, media.max_file_bytes)
        return file_sha256(path)
    except MediaError as err:
        raise MediaError(
            err.path, f"{err.reason} (sample {sample.id!r} at {sample.source})"
        ) from None
    except OSError as err:
        raise MediaError(
            path, f"{err.strerror} (sample {sample.id!r} at {sample.source})"
        ) from None


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex) over names, dtypes, shapes and values: a weights identity
    that does not depend on how the weights were serialised."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Namespace:
    """Everything besides the content that a cached feature depends on."""

    level: str
    modality: str
    identity: tuple[tuple[str, Any], ...]
    """Sorted (name, JSON value) pairs: encoder identity, media limits, aligner head."""

    @property
    def digest(self) -> str:
        text = json.dumps([FORMAT, self.level, self.modality, self.identity], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def folder(self) -> str:
        return f"{self.level}/{self.modality}-{self.digest}"


def namespace(
    level: str,
    modality: str,
    encoder_identity: str,
    media: MediaConfig,
    head_digest: str | None = None,
) -> Namespace:
    """The namespace of ``level`` features of one encoder (and aligner head).

    Media limits are part of the key for decoded media: a file accepted under looser
    limits must not be served from the cache once the limits refuse it."""
    if level not in LEVELS:
        raise ValueError(f"unknown cache level {level!r}; expected one of {LEVELS}")
    if (level == "aligned") != (head_digest is not None):
        raise ValueError("aligned features need the aligner head's digest, encoder ones none")
    parts: dict[str, Any] = {"encoder": encoder_identity}
    if modality != "text":
        parts["media"] = json.dumps(media.model_dump(), sort_keys=True)
    if head_digest is not None:
        parts["aligner_head"] = head_digest
    return Namespace(level, modality, tuple(sorted(parts.items())))


# ----------------------------------------------------------------------------- store


@dataclass
class CacheStats:
    """Counts of one level: entries read, computed, and found corrupt (then recomputed)."""

    hits: int = 0
    computed: int = 0
    corrupt: int = 0
    bytes_written: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "computed": self.computed,
            "corrupt": self.corrupt,
            "bytes_written": self.bytes_written,
        }


class CorruptEntry(ValueError):
    """A cache file that does not hold what its name promises."""


@dataclass
class FeatureCache:
    """Content-addressed feature files under ``root`` (see the module docstring)."""

    root: Path
    stats: dict[str, CacheStats] = field(
        default_factory=lambda: {lv: CacheStats() for lv in LEVELS}
    )

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(
                f"feature_cache_dir: {self.root} exists and is not a folder; "
                "point it at a folder (it is created if missing)"
            )

    def path(self, ns: Namespace, key: str) -> Path:
        return self.root / ns.folder / key[:2] / f"{key}{SUFFIX}"

    def read(self, ns: Namespace, key: str) -> torch.Tensor | None:
        """The cached feature ``[d]`` float32, or None (absent, or corrupt: then the file is
        deleted, a warning logged and ``stats[level].corrupt`` counted)."""
        path = self.path(ns, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode_entry(data, ns, key)
        except CorruptEntry as err:
            log.warning("feature cache: %s is corrupt (%s); recomputing it", path, err)
            self.stats[ns.level].corrupt += 1
            path.unlink(missing_ok=True)
            return None

    def write(self, ns: Namespace, key: str, feature: torch.Tensor) -> int:
        """Store ``feature [d]`` atomically; returns the bytes written."""
        path = self.path(ns, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._describe(ns)
        data = encode_entry(feature, ns, key)
        _atomic_write(path, data)
        return len(data)

    def _describe(self, ns: Namespace) -> None:
        """``identity.json`` beside the entries: what the folder's digest stands for."""
        info = self.root / ns.folder / "identity.json"
        if not info.is_file():
            text = json.dumps(
                {"format": FORMAT, "level": ns.level, "modality": ns.modality, **dict(ns.identity)},
                indent=2,
            )
            _atomic_write(info, text.encode())

    def fill(
        self,
        ns: Namespace,
        keys: Sequence[str | None],
        compute: Callable[[list[int]], torch.Tensor],
        dim: Callable[[], int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of n rows: cached where possible, else ``compute(rows)`` → ``[len(rows), d]``
        for the first row of each missing key (equal content is computed once), stored.

        Args:
            keys: per row, its content key, or None where the row lacks the modality.
            dim: the feature size, asked only when no row has the modality.
        Returns:
            (``[n, d]`` float32 with zero rows where absent, ``[n]`` bool present).
        """
        stats = self.stats[ns.level]
        present = torch.tensor([k is not None for k in keys], dtype=torch.bool)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key is not None:
                first.setdefault(key, i)
        found: dict[str, torch.Tensor] = {}
        missing: list[int] = []
        for key, row in first.items():
            feature = self.read(ns, key)
            if feature is None:
                missing.append(row)
            else:
                found[key] = feature
        stats.hits += len(found)
        if missing:
            computed = compute(missing).detach().float().cpu()
            for row, feature in zip(missing, computed, strict=True):
                stats.bytes_written += self.write(ns, keys[row], feature)
                found[keys[row]] = feature.clone()
            stats.computed += len(missing)
        sizes = {f.shape[0] for f in found.values()}
        if len(sizes) > 1:
            raise CorruptEntry(f"{self.root / ns.folder}: entries of different sizes {sizes}")
        width = sizes.pop() if sizes else dim()
        out = torch.zeros(len(keys), width, dtype=torch.float32)
        for i, key in enumerate(keys):
            if key is not None:
                out[i] = found[key]
        return out, present

    def size(self) -> tuple[int, int, int]:
        """(entries, bytes, bytes allocated on disk) of everything under ``root``."""
        entries = total = allocated = 0
        if self.root.is_dir():
            for path in self.root.rglob(f"*{SUFFIX}"):
                stat = path.stat()
                entries += 1
                total += stat.st_size
                allocated += stat.st_blocks * 512
        return entries, total, allocated


def encode_entry(feature: torch.Tensor, ns: Namespace, key: str) -> bytes:
    """``[d]`` float32 → safetensors bytes whose metadata name the key, the namespace and
    the values' sha256."""
    values = feature.detach().to(torch.float32).cpu().contiguous().reshape(-1)
    meta = {
        "format": FORMAT,
        "key": key,
        "namespace": ns.digest,
        "sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest(),
    }
    return save_safetensors({"feature": values}, metadata=meta)


def decode_entry(data: bytes, ns: Namespace, key: str) -> torch.Tensor:
    """Check and decode :func:`encode_entry`'s bytes; raises :class:`CorruptEntry`."""
    if len(data) < 8:
        raise CorruptEntry(f"{len(data)} bytes, shorter than a header")
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = load_safetensors(data)
    except Exception as err:  # noqa: BLE001 - any parse failure means a broken entry
        raise CorruptEntry(f"unreadable: {err}") from None
    meta = header.get("__metadata__") or {}
    expected = {"format": FORMAT, "key": key, "namespace": ns.digest}
    for name, value in expected.items():
        if meta.get(name) != value:
            raise CorruptEntry(f"metadata {name} is {meta.get(name)!r}, expected {value!r}")
    feature = tensors.get("feature")
    if feature is None or feature.dtype != torch.float32 or feature.dim() != 1:
        raise CorruptEntry("no 1-D float32 'feature' tensor")
    if hashlib.sha256(feature.numpy().tobytes()).hexdigest() != meta.get("sha256"):
        raise CorruptEntry("values do not match their sha256")
    return feature


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a unique temporary file beside ``path``, then rename over it: readers see
    the old file or the whole new one, and two writers never mix their bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- encoders


class LazyEncoders:
    """The config's frozen encoders, built only when a cache miss needs one.

    Identities come from the weight files (:func:`encoder_identity`), so a run whose
    features are all cached never loads an encoder (:attr:`built` stays empty)."""

    def __init__(self, configs: EncodersConfig, modalities: Sequence[str]) -> None:
        from purrsight.models.encoders import encoder_identity

        self.configs = configs
        self.identities = {m: encoder_identity(m, getattr(configs, m)) for m in modalities}
        self._built: dict[str, Any] = {}

    @property
    def built(self) -> list[str]:
        """Modalities whose encoder was loaded."""
        return list(self._built)

    def get(self, modality: str) -> Any:
        """The built :class:`~purrsight.models.encoders.FrozenEncoder` for ``modality``."""
        if modality not in self._built:
            from purrsight.models.encoders import build_encoder

            encoder = build_encoder(modality, getattr(self.configs, modality))
            if encoder.identity != self.identities[modality]:
                raise RuntimeError(
                    f"encoders.{modality}: its weights changed while running "
                    f"({self.identities[modality]} → {encoder.identity})"
                )
            self._built[modality] = encoder
        return self._built[modality]

    def release(self) -> None:
        """Drop the built encoders (their memory goes back to the LLM)."""
        self._built.clear()


def encoder_features(
    samples: Sequence[Sample],
    modality: str,
    encoders: LazyEncoders,
    media: MediaConfig,
    batch_size: int,
    cache: FeatureCache,
    desc: str,
    keys: Sequence[str | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw encoder features of ``samples``: (``[n, d_m]``, ``[n]`` bool present).
    ``keys``: the samples' content keys when the caller has them already."""
    ns = namespace("encoder", modality, encoders.identities[modality], media)
    if keys is None:
        keys = [content_key(s, modality, media) for s in samples]

    def compute(rows: list[int]) -> torch.Tensor:
        chosen = [samples[i] for i in rows]
        table = encode_samples(chosen, {modality: encoders.get(modality)}, media, batch_size, desc)
        return table.features[modality]

    return cache.fill(ns, keys, compute, lambda: encoders.get(modality).dim)


def encoder_table(
    samples: Sequence[Sample],
    encoders: LazyEncoders,
    media: MediaConfig,
    batch_size: int,
    cache: FeatureCache,
    desc: str = "encode",
) -> FeatureTable:
    """:func:`~purrsight.features.raw.encode_samples` through the cache, for every
    modality of ``encoders``."""
    features, present = {}, {}
    for modality in encoders.identities:
        features[modality], present[modality] = encoder_features(
            samples, modality, encoders, media, batch_size, cache, desc
        )
    return FeatureTable(ids=[s.id for s in samples], features=features, present=present)


def text_features(
    texts: Sequence[str], encoders: LazyEncoders, media: MediaConfig, cache: FeatureCache
) -> torch.Tensor:
    """The text encoder's features of plain strings (e.g. label descriptions): ``[k, d_text]``."""
    ns = namespace("encoder", "text", encoders.identities["text"], media)

    def compute(rows: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return encoders.get("text")([texts[i] for i in rows]).float()

    features, _ = cache.fill(ns, [text_key(t) for t in texts], compute, lambda: 0)
    return features


@torch.no_grad()
def apply_head(head: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """One frozen aligner head in eval mode (no dropout): ``[n, d_m]`` → ``[n, e]``."""
    was_training = head.training
    head.eval()
    try:
        return head(features).float()
    finally:
        head.train(was_training)


def aligned_features(
    samples: Sequence[Sample],
    modality: str,
    encoders: LazyEncoders,
    heads: Mapping[str, torch.nn.Module],
    embed_dim: int,
    media: MediaConfig,
    batch_size: int,
    cache: FeatureCache,
    desc: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned unit vectors of ``samples``: (``[n, e]``, ``[n]`` bool present). A miss is
    aligned from the ``encoder`` level, which runs the encoder only on its own misses."""
    head = heads[modality]
    ns = namespace(
        "aligned", modality, encoders.identities[modality], media, tensor_digest(head.state_dict())
    )
    keys = [content_key(s, modality, media) for s in samples]

    def compute(rows: list[int]) -> torch.Tensor:
        chosen = [samples[i] for i in rows]
        chosen_keys = [keys[i] for i in rows]
        raw, _ = encoder_features(
            chosen, modality, encoders, media, batch_size, cache, desc, chosen_keys
        )
        return apply_head(head, raw)

    return cache.fill(ns, keys, compute, lambda: embed_dim)
