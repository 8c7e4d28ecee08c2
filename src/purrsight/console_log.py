"""The console log handler shared by the CLI and the training logs."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


def level_from_env() -> int:
    """``LOG_LEVEL`` as a logging level (INFO when unset or unknown)."""
    name = os.environ.get("LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


class DropAdverts(logging.Filter):
    """Lightning advertises a cloud logger at every start; that is noise in a run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now*.

    A plain ``StreamHandler()`` keeps the stream it saw when built; when that stream is later
    replaced and closed (pytest's capture, a redirect in a notebook), every record after
    that fails with "I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


def console_handler() -> logging.Handler:
    """A stderr handler with the project's one console format."""
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATE_FORMAT))
    handler.addFilter(DropAdverts())
    return handler
