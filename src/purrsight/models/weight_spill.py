"""Where :meth:`MultimodalLLM.frozen_linears_as` spills the fp32 originals of the frozen
linears while training holds bf16 copies, and the clean-up of spills whose process died.

A spill is ``<folder>/.frozen-linears-<host>-<pid>.pt`` (hundreds of MB for a 0.5B model).
Its writer removes it when the block exits, but a process killed with SIGKILL (or by the
kernel's OOM killer) cannot; :func:`remove_stale_spills` deletes those whose process no
longer runs. Only this host's spills are judged: on a folder shared by several nodes a
pid means nothing elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

SPILL_PREFIX = ".frozen-linears-"


def spill_path(folder: Path) -> Path:
    """This process's spill file in ``folder``."""
    return Path(folder) / f"{SPILL_PREFIX}{socket.gethostname()}-{os.getpid()}.pt"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_spills(folder: Path) -> list[Path]:
    """Delete this host's spill files in ``folder`` whose process is gone; each is logged.
    Returns the deleted paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefix = f"{SPILL_PREFIX}{socket.gethostname()}-"
    stale = []
    for path in sorted(folder.glob(f"{prefix}*.pt")):
        pid_text = path.name[len(prefix) : -len(".pt")]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if not _pid_running(int(pid_text)):
            log.warning("removing %s: spilled weights of a process that was killed", path)
            path.unlink(missing_ok=True)
            stale.append(path)
    return stale
