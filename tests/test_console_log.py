"""The console handler follows sys.stderr instead of keeping a stream that may be closed."""

from __future__ import annotations

import io
import logging
import sys

from purrsight.console_log import console_handler


def test_console_handler_writes_to_the_current_stderr_after_the_old_one_closed(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logger = logging.getLogger("purrsight.test_console_log")
    logger.propagate = False
    handler = console_handler()
    logger.addHandler(handler)
    try:
        logger.warning("one")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logger.warning("two litlogger advert")
        logger.warning("three")
    finally:
        logger.removeHandler(handler)
    lines = second.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING purrsight.test_console_log: three")
