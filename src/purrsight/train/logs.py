"""Training logs: every log line of a run to ``<output_dir>/logs/training.log`` and the console.

``LOG_LEVEL`` (DEBUG, INFO, WARNING, …; default INFO) sets how much both show. Python
warnings (Lightning's hints, deprecations) are routed into the same log while a run lasts.
A failed run's full traceback goes to the file only: the console gets one line from the
CLI, the file keeps what is needed to debug it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from purrsight.console_log import (
    FORMAT,
    DropAdverts,
    console_handler,
    level_from_env,
)

_TRACE_LOGGER = "purrsight.trace"


def _writes_to_console(handler: logging.Handler) -> bool:
    # A StderrHandler's ``stream`` is the current sys.stderr, so it passes this test too.
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and handler.stream in (sys.stderr, sys.stdout)
    )


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
    if not any(_writes_to_console(h) for h in root.handlers):
        added.append(console_handler())
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
