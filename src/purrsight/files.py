"""The one atomic file writer (:func:`atomic_write`): a crash never leaves half a file.
Content hashes of files are :func:`purrsight.hashing.file_sha256`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def atomic_write(
    path: str | Path,
    content: bytes | str | Callable[[BinaryIO], object],
    *,
    durable: bool = False,
) -> Path:
    """Write ``content`` to ``path`` through a temporary file beside it and ``os.replace``:
    readers see the old file or the whole new one, never part of it, and two writers
    never mix their bytes. Returns ``path``.

    Args:
        content: bytes, text (written as UTF-8), or a function that writes into the open
            binary file (e.g. ``lambda f: torch.save(obj, f)``).
        durable: also fsync the file and its folder, so the new file survives a power
            loss once this returns (checkpoints); off, the OS flushes it when it likes.

    The temporary file is ``.<name>.<pid>.<random>.tmp`` in the same folder (made if
    missing), opened plainly so it gets the usual umask permissions; it is removed if
    writing fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        with tmp.open("wb") as handle:
            if isinstance(content, str):
                handle.write(content.encode("utf-8"))
            elif isinstance(content, bytes | bytearray | memoryview):
                handle.write(content)
            else:
                content(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
