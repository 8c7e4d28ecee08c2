"""What ``purrsight predict --inputs`` runs on: a folder of media or a JSONL manifest, as
an ordered list of inputs, each an image and/or a sound, or a video.

A **folder** is walked recursively (hidden files and folders skipped), in the order of
the files' relative paths. Files are grouped by their path without the extension (the
*stem*): ``cats/tom.jpg`` and ``cats/tom.wav`` are one input ``cats/tom`` (image + sound);
a lone image or sound is an input by itself; a video is an input by itself (its frames
and sound track), named with its extension (``clips/tom.mp4``) so that it never collides
with a photo of the same stem. What cannot be an input is listed too, as an input that
carries its error, so that the run writes an error line for it and goes on: a file that
is no image, sound or video, and a stem with two images or two sounds (which to pair?).

A **JSONL manifest** is the project's data format (``data/manifest.py``: ``id``,
``image``, ``audio``, ``video`` relative to the file, ``label`` …); for prediction
``response`` may be left out, and an optional ``text`` is the owner's note. A line that
cannot be used becomes an input carrying its error (named ``line-<n>`` when it has no
usable id); ``label``, when present, is kept, so results can be compared with it.

Nothing here decodes media: a corrupt or empty file is found when it is predicted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from purrsight.data.manifest import ManifestError, parse_line
from purrsight.data.media import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | AUDIO_EXTENSIONS | VIDEO_EXTENSIONS


class InputsError(ValueError):
    """The inputs as a whole cannot be used (no such folder or file, nothing in it)."""


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch run, in run order."""

    id: str
    """Unique in the run: the stem's (or video's) relative path, or the manifest's id."""
    image: Path | None = None
    audio: Path | None = None
    video: Path | None = None
    text: str | None = None
    label: str | None = None
    """The manifest's label, if it has one."""
    error: str | None = None
    """Why this input cannot be predicted, found while listing (None: it can be tried)."""
    error_kind: str | None = None
    shown: dict[str, str] = field(default_factory=dict)
    """{image|audio|video: the path as results show it (relative to the inputs)}."""

    def request(self) -> dict[str, object]:
        """The :meth:`Predictor.prepare` keyword arguments."""
        return {"image": self.image, "audio": self.audio, "video": self.video, "text": self.text}


def discover(path: str | Path, exclude: Iterable[str | Path] = ()) -> list[BatchInput]:
    """The inputs of a folder or a ``.jsonl`` manifest, in order (see the module
    docstring); ``exclude``: files never taken as inputs (the run's own output files).

    Raises:
        InputsError: ``path`` is neither a folder nor a JSONL file, or holds no input.
    """
    path = Path(path)
    if path.is_dir():
        items = from_folder(path, exclude)
    elif path.is_file() and path.suffix.lower() == ".jsonl":
        items = from_manifest(path)
    elif path.exists():
        raise InputsError(f"--inputs: {path} is neither a folder nor a .jsonl manifest")
    else:
        raise InputsError(f"--inputs: {path} does not exist")
    if not items:
        raise InputsError(f"--inputs: {path} holds no files to predict")
    return items


def _visible_files(root: Path) -> list[Path]:
    files = []
    for candidate in root.rglob("*"):
        rel = candidate.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if candidate.is_file() or (candidate.is_symlink() and not candidate.is_dir()):
            files.append(candidate)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def from_folder(root: Path, exclude: Iterable[str | Path] = ()) -> list[BatchInput]:
    """A folder's inputs: image + sound paired by stem, videos whole, errors listed."""
    skip = {Path(p).resolve() for p in exclude}
    groups: dict[str, list[Path]] = {}
    for path in _visible_files(root):
        if path.resolve() in skip:
            continue
        stem = path.relative_to(root).with_suffix("").as_posix()
        groups.setdefault(stem, []).append(path)
    items: list[tuple[str, BatchInput]] = []
    for stem, files in groups.items():
        items.extend(_inputs_of_stem(root, stem, files))
    items.sort(key=lambda pair: pair[0])
    return [item for _, item in items]


def _inputs_of_stem(root: Path, stem: str, files: list[Path]) -> list[tuple[str, BatchInput]]:
    """(sort key, input) for one stem's files: the pair, each video, each odd file."""

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    by_kind: dict[str, list[Path]] = {"image": [], "audio": [], "video": []}
    out: list[tuple[str, BatchInput]] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            by_kind["image"].append(path)
        elif suffix in AUDIO_EXTENSIONS:
            by_kind["audio"].append(path)
        elif suffix in VIDEO_EXTENSIONS:
            by_kind["video"].append(path)
        else:
            reason = (
                f"{rel(path)}: not an image, sound or video file (allowed: "
                f"{', '.join(sorted(MEDIA_EXTENSIONS))})"
            )
            out.append((rel(path), _failed(rel(path), reason, "unsupported_type", rel(path))))
    for video in by_kind["video"]:
        out.append((rel(video), BatchInput(rel(video), video=video, shown={"video": rel(video)})))
    images, audios = by_kind["image"], by_kind["audio"]
    if len(images) > 1 or len(audios) > 1:
        names = ", ".join(rel(p) for p in images + audios)
        reason = f"{names}: several images or sounds share the stem {stem!r}; which to pair?"
        out.append((stem, _failed(stem, reason, "ambiguous_stem", None)))
    elif images or audios:
        image, audio = (images or [None])[0], (audios or [None])[0]
        shown = {k: rel(p) for k, p in (("image", image), ("audio", audio)) if p is not None}
        out.append((stem, BatchInput(stem, image=image, audio=audio, shown=shown)))
    return out


def _failed(name: str, reason: str, kind: str, file: str | None) -> BatchInput:
    """An input that carries its error (``file``: the one file it is about, if one)."""
    shown = {"file": file} if file is not None else {}
    return BatchInput(name, error=reason, error_kind=kind, shown=shown)


def from_manifest(path: Path) -> list[BatchInput]:
    """A JSONL manifest's inputs, in line order (``response`` optional, ``text`` the
    owner's note); a bad line is an input carrying its error (named ``line-<n>``)."""
    root = path.parent
    items: list[BatchInput] = []
    seen: dict[str, str] = {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            source = f"{path}:{number}"
            try:
                item = _manifest_line(raw, root, source)
            except ManifestError as err:
                item = BatchInput(f"line-{number}", error=str(err), error_kind=err.kind)
            if item is None:
                continue
            if item.id in seen:
                item = BatchInput(
                    f"line-{number}",
                    error=f"{source}: duplicate id {item.id!r} (first at {seen[item.id]})",
                    error_kind="duplicate_id",
                )
            seen[item.id] = source
            items.append(item)
    return items


def _manifest_line(raw: bytes, root: Path, source: str) -> BatchInput | None:
    """One line (None if blank), through the project's own line validator."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{source}: not UTF-8 text ({err.reason})", "malformed_json") from None
    if not text.strip():
        return None
    note = None
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        record = None  # parse_line names the problem
    if isinstance(record, dict):
        note = record.pop("text", None)
        if note is not None and not isinstance(note, str):
            raise ManifestError(f"{source}: text: must be a string (the owner's note)")
        record.setdefault("response", "")
        text = json.dumps(record)
    sample = parse_line(text, root, source, None)
    shown = {
        m: _shown(p, root)
        for m, p in (("image", sample.image), ("audio", sample.audio), ("video", sample.video))
        if p is not None
    }
    return BatchInput(
        sample.id,
        image=sample.image,
        audio=sample.audio,
        video=sample.video,
        text=note,
        label=sample.label,
        shown=shown,
    )


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
