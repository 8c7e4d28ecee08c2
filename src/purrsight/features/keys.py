"""What a cached feature is keyed by: its content (media bytes or text) and a namespace
(encoder identity, media limits and, for aligned features, the aligner head's weights).

See :mod:`purrsight.features.cache` for the layout these keys address.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from purrsight.config import MediaConfig
from purrsight.data.manifest import Sample
from purrsight.data.media import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, MediaError
from purrsight.data.media import _check_file as check_media_file
from purrsight.hashing import file_sha256

FORMAT = "purrsight-feature-v1"
LEVELS = ("encoder", "aligned")


def text_key(text: str) -> str:
    """The cache key of a text (a caption, a label description): sha256 of its bytes."""
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
    compute_dtype: str = "float32",
) -> Namespace:
    """The namespace of ``level`` features of one encoder (and aligner head).

    Media limits are part of the key for decoded media: a file accepted under looser
    limits must not be served from the cache once the limits refuse it. The encoders'
    compute dtype is part of it when it is not float32 (bf16 features are close to, not
    equal to, fp32 ones; fp32 keys stay what they always were)."""
    if level not in LEVELS:
        raise ValueError(f"unknown cache level {level!r}; expected one of {LEVELS}")
    if (level == "aligned") != (head_digest is not None):
        raise ValueError("aligned features need the aligner head's digest, encoder ones none")
    parts: dict[str, Any] = {"encoder": encoder_identity}
    if modality != "text":
        parts["media"] = json.dumps(media.model_dump(), sort_keys=True)
    if head_digest is not None:
        parts["aligner_head"] = head_digest
    if compute_dtype != "float32":
        parts["compute"] = compute_dtype
    return Namespace(level, modality, tuple(sorted(parts.items())))
