"""The instruction JSONL (one sample a line; see DESIGN.md) and its checks.

Media paths are relative to the JSONL file's folder. Absolute paths and paths that
leave that folder (``..``, symlinks pointing out) are refused. Every problem is
reported as ``<file>:<line>: <reason>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from purrsight.report import ANSWER_FIELDS, Report, answer_json
from purrsight.vocabulary import DEFAULT_INSTRUCTION, MEDIA_FIELDS


class ManifestError(ValueError):
    """A JSONL line that cannot be used; the message names the file and line.

    ``kind`` sorts the problem for ``purrsight data check``: ``malformed_json``,
    ``schema``, ``label``, ``path_outside``, ``duplicate_id``, ``file`` (the JSONL itself).
    """

    def __init__(self, message: str, kind: str = "schema") -> None:
        super().__init__(message)
        self.kind = kind


class _Record(BaseModel):
    """The schema of one JSONL line."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    image: str | None = None
    audio: str | None = None
    video: str | None = None
    instruction: str = DEFAULT_INSTRUCTION
    response: Report | str
    label: str | None = None
    subject_id: str | None = None
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_modality(self) -> _Record:
        if not any(getattr(self, name) for name in MEDIA_FIELDS):
            raise ValueError("a sample needs at least one of image, audio, video")
        return self


@dataclass(frozen=True)
class Sample:
    """One sample with its media paths resolved to absolute paths."""

    id: str
    image: Path | None
    audio: Path | None
    video: Path | None
    instruction: str
    response: Report | str
    label: str | None
    subject_id: str | None
    source: str
    """``<file>:<line>``, for error messages."""

    @property
    def modalities(self) -> list[str]:
        return [name for name in MEDIA_FIELDS if getattr(self, name) is not None]

    @property
    def text(self) -> str:
        """The caption used as the text side of contrastive alignment."""
        if isinstance(self.response, Report):
            return self.response.summary
        return self.response

    def response_json(self, fields: Sequence[str] = ANSWER_FIELDS) -> str:
        """The response exactly as the assistant should write it (a report: its
        :func:`~purrsight.report.answer_json` of ``fields``)."""
        if isinstance(self.response, Report):
            return answer_json(self.response, fields)
        return self.response


def resolve_media_path(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that leaves ``root``."""
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ValueError(
            f"absolute path {relative!r} is not allowed; use a path relative to the JSONL"
        )
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ValueError(f"path {relative!r} leaves the data folder {root}")
    return resolved


def parse_line(text: str, root: Path, source: str, labels: list[str] | None) -> Sample:
    """One JSONL line → :class:`Sample`; raises :class:`ManifestError` naming ``source``."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"{source}: malformed JSON ({err.msg} at column {err.colno})", "malformed_json"
        ) from None
    except RecursionError:
        raise ManifestError(
            f"{source}: malformed JSON (nested too deeply)", "malformed_json"
        ) from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    try:
        record = _Record.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<line>"
        raise ManifestError(f"{source}: {key}: {first['msg']}") from None
    if labels is not None and record.label is not None and record.label not in labels:
        raise ManifestError(f"{source}: label {record.label!r} is not one of {labels}", "label")
    paths: dict[str, Path | None] = {}
    for name in MEDIA_FIELDS:
        value = getattr(record, name)
        if value and "\x00" in value:
            raise ManifestError(f"{source}: {name}: the path holds a NUL character")
        try:
            paths[name] = resolve_media_path(root, value) if value else None
        except ValueError as err:
            raise ManifestError(f"{source}: {name}: {err}", "path_outside") from None
        except (OSError, RuntimeError) as err:  # a symlink loop, a name too long
            raise ManifestError(
                f"{source}: {name}: cannot resolve {value!r} ({err})", "unreadable_media"
            ) from None
    return Sample(
        id=record.id,
        instruction=record.instruction,
        response=record.response,
        label=record.label,
        subject_id=record.subject_id,
        source=source,
        **paths,
    )


def iter_manifest(
    path: str | Path, labels: list[str] | None = None
) -> Iterator[Sample | ManifestError]:
    """Every non-blank line of a JSONL file, in order, as a :class:`Sample` or as the
    :class:`ManifestError` that line earns (a repeated id included). The one line
    validator shared by training (:func:`read_manifest`) and ``purrsight data check``.

    Raises:
        ManifestError: the file itself is missing (kind ``file``).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: data file not found", "file")
    root = path.parent
    seen: dict[str, str] = {}
    # Bytes, decoded line by line: a text-mode reader decodes ahead in blocks, so an
    # invalid byte would be blamed on the wrong line and end the file there.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            source = f"{path}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield ManifestError(
                    f"{source}: not UTF-8 text ({err.reason} at byte {err.start})",
                    "malformed_json",
                )
                continue
            if not text.strip():
                continue
            try:
                sample = parse_line(text, root, source, labels)
            except ManifestError as err:
                yield err
                continue
            if sample.id in seen:
                yield ManifestError(
                    f"{source}: duplicate id {sample.id!r} (first at {seen[sample.id]})",
                    "duplicate_id",
                )
                continue
            seen[sample.id] = source
            yield sample


def read_manifest(path: str | Path, labels: list[str] | None = None) -> list[Sample]:
    """All samples of a JSONL file, in file order. Blank lines are skipped; any bad
    line raises :class:`ManifestError` naming the file and line."""
    samples: list[Sample] = []
    for item in iter_manifest(path, labels):
        if isinstance(item, ManifestError):
            raise item
        samples.append(item)
    if not samples:
        raise ManifestError(f"{path}: no samples in the file", "file")
    return samples
