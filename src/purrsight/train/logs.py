"""Training logs: every log line of a run to ``<output_dir>/logs/training.log`` and the console.

``LOG_LEVEL`` (DEBUG, INFO, WARNING, …; default INFO) sets how much both show. Python
warnings (Lightning's hints, deprecations) are routed into the same log while a run lasts.
A failed run's full traceback goes to the file only: the console gets one line from the
CLI, the file keeps what is needed to debug it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
_TRACE_LOGGER = "purrsight.trace"


def level_from_env() -> int:
    """``LOG_LEVEL`` as a logging level (INFO when unset or unknown)."""
    name = os.environ.get("LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


class DropAdverts(logging.Filter):
    """Lightning advertises a cloud logger at every start; that is noise in a run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _console_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATE_FORMAT))
    handler.addFilter(DropAdverts())
    return handler


@contextlib.contextmanager
def training_log(path: Path) -> Iterator[Callable[[BaseException], None]]:
    """Send the root logger's records to ``path`` (appending) for the duration.

    Adds a console handler too when nobody configured logging (a script or a test calling
    the training function directly). Yields ``record_failure(exc)``, which writes an
    exception's traceback to the file only. Handlers and levels are restored on exit, so
    several runs in one process never write into each other's files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    file_handler.addFilter(DropAdverts())
    added = [file_handler]
    if not any(
        isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.stdout)
        for h in root.handlers
        if not isinstance(h, logging.FileHandler)
    ):
        added.append(_console_handler())
    old_level = root.level
    wanted = level_from_env()
    if root.getEffectiveLevel() > wanted or old_level == logging.NOTSET:
        root.setLevel(wanted)
    for handler in added:
        root.addHandler(handler)
    trace = logging.getLogger(_TRACE_LOGGER)
    trace.propagate = False  # tracebacks: file only
    trace.addHandler(file_handler)
    trace.setLevel(logging.DEBUG)
    logging.captureWarnings(True)

    def record_failure(exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        trace.error("run failed:\n%s", text.rstrip())

    try:
        yield record_failure
    finally:
        logging.captureWarnings(False)
        trace.removeHandler(file_handler)
        for handler in added:
            root.removeHandler(handler)
        file_handler.close()
        root.setLevel(old_level)
