"""Progress lines a user can see in any log: step/total, a few figures, seconds per step, ETA.

A progress bar draws nothing when stderr is not a terminal (CI, ``nohup``, ``> log``), and
one line every N steps can mean minutes of silence on a slow machine. :class:`Progress`
logs a line through :mod:`logging` (so it reaches the console and any log file the
application set up) every ``every_n`` items or every ``every_seconds``, whichever comes
first, and always for the last item::

    progress = Progress("phase2", total=74, logger=log, every_n=5)
    for step in range(1, 75):
        ...
        progress.update(step, loss=0.4123, lr=9.1e-4)
    # phase2 step 12/74 (16 %): loss 0.4123, lr 9.1e-04, 5.8 s/step, ETA 6 min 0 s

The ETA is the mean time per item so far times the items left. Lines are only written from
:meth:`Progress.update`: a single item slower than ``every_seconds`` gives one line per item.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

DEFAULT_SECONDS = 30.0
DEFAULT_LINES = 10  # every_n when not given: a line every tenth of the work


def format_duration(seconds: float) -> str:
    """``7 s``, ``6 min 0 s``, ``2 h 5 min`` (rounded to the second; coarser past an hour)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def format_value(value: object) -> str:
    """A field's value: numbers short but readable (``0.4123``, ``9.1e-04``, ``1234``)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or value == 0:
        return str(value)
    if abs(value) < 1e-3:  # learning rates: the exponent is what matters
        return f"{value:.1e}"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


class Progress:
    """Logs ``<name> <unit> <done>/<total> (<pct> %): <fields>, <s>/<unit>, ETA <time>``.

    Args:
        name: what is progressing (``phase2``, ``generate``).
        total: items in all (steps, samples, reports).
        logger: where lines go (INFO); this module's logger when None.
        unit: what one item is called in the line.
        every_n: a line whenever ``done`` passes a multiple of this; default: a tenth of
            ``total``.
        every_seconds: a line at the first update this long after the previous line.
        done: items already done before timing starts (a resumed run): the ETA counts only
            the items this object saw.
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(
        self,
        name: str,
        total: int,
        logger: logging.Logger | None = None,
        *,
        unit: str = "step",
        every_n: int | None = None,
        every_seconds: float = DEFAULT_SECONDS,
        done: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.total, self.unit = name, max(0, int(total)), unit
        self.logger = logger or logging.getLogger(__name__)
        self.every_n = max(1, every_n if every_n is not None else self.total // DEFAULT_LINES)
        self.every_seconds = every_seconds
        self.clock = clock
        self._first_done = self._last_done = done
        self._started = self._last_at = clock()

    def due(self, done: int) -> bool:
        """Whether :meth:`update` with ``done`` would write a line now (callers whose
        fields cost something to compute ask first)."""
        return self._due(done, self.clock())

    def _due(self, done: int, now: float) -> bool:
        if done >= self.total:  # the last item: once, however often it is reported
            return self._last_done < self.total
        if done // self.every_n > self._last_done // self.every_n:
            return True
        return now - self._last_at >= self.every_seconds

    def update(self, done: int, **fields: object) -> str | None:
        """Record that ``done`` items are finished; log and return a line when one is due."""
        now = self.clock()
        if not self._due(done, now):
            return None
        line = self.line(done, now, fields)
        self.logger.info("%s", line, stacklevel=2)  # the caller's file:line in the record
        self._last_done, self._last_at = done, now
        return line

    def line(self, done: int, now: float, fields: dict[str, object]) -> str:
        """The progress line for ``done`` items at clock time ``now``."""
        percent = 100 * done // self.total if self.total else 100
        parts = [f"{key} {format_value(value)}" for key, value in fields.items()]
        per_item = self.seconds_per_item(done, now)
        if per_item is None:
            parts += [f"? s/{self.unit}", "ETA ?"]
        else:
            eta = per_item * max(0, self.total - done)
            parts += [f"{per_item:.3g} s/{self.unit}", f"ETA {format_duration(eta)}"]
        return f"{self.name} {self.unit} {done}/{self.total} ({percent} %): " + ", ".join(parts)

    def seconds_per_item(self, done: int, now: float) -> float | None:
        """Mean seconds per item since timing started (None before the first item)."""
        counted = done - self._first_done
        if counted <= 0:
            return None
        return (now - self._started) / counted
