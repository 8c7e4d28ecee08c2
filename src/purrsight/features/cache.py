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

Keys and namespaces are :mod:`purrsight.features.keys`; this module is the store. Only
:class:`~purrsight.features.FeatureSource` reads and fills it.

Shapes: n = samples, d = feature size (d_m for ``encoder``, e for ``aligned``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from purrsight.config import ConfigError
from purrsight.features.keys import FORMAT, LEVELS, Namespace
from purrsight.files import atomic_write

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"


@dataclass
class CacheStats:
    """Counts of one level: entries read, computed, and found corrupt (then recomputed)."""

    hits: int = 0
    computed: int = 0
    corrupt: int = 0
    bytes_written: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


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
        atomic_write(path, data)
        return len(data)

    def _describe(self, ns: Namespace) -> None:
        """``identity.json`` beside the entries: what the folder's digest stands for."""
        info = self.root / ns.folder / "identity.json"
        if not info.is_file():
            text = json.dumps(
                {"format": FORMAT, "level": ns.level, "modality": ns.modality, **dict(ns.identity)},
                indent=2,
            )
            atomic_write(info, text)

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
