"""One thread owns the Predictor; requests wait in a bounded queue and are batched.

The Predictor is not thread-safe, and a CPU gains little from running two model calls at
once, so a single worker thread takes the first waiting job, gathers up to ``max_batch``
more that are already waiting (no extra wait), decodes each one on its own (a bad file
fails only its own request) and runs the good ones of each mode through one
``predict_prepared`` call. A full queue refuses at once (:class:`Busy`, an HTTP 503), so
waiting requests never grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """The queue is full, or the request waited past its deadline: retry later."""


@dataclass
class Job:
    request: dict[str, Any]
    """``image`` / ``audio`` / ``video`` as bytes, ``text`` as str (each optional)."""
    mode: str
    deadline: float
    """``time.monotonic()`` after which the job is dropped instead of run."""
    future: Future = field(default_factory=Future)


class PredictorWorker:
    """Runs jobs for one predictor on one thread; see the module docstring."""

    def __init__(self, predictor, queue_size: int, max_batch: int, sandbox=None) -> None:
        self.predictor = predictor
        self.sandbox = sandbox
        """A :class:`~.sandbox.DecodeSandbox` that decodes each upload first (or None)."""
        self.max_batch = max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="purrsight-predictor", daemon=True)
        self.batches = 0
        self.largest_batch = 0
        self.seconds_per_request = 1.0
        """Moving average of model time per request (what Retry-After is estimated from)."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the job in hand, fail the waiting ones, and end the thread."""
        self._drain(Busy("the server is shutting down"))
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout=30.0)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the time to work off the queue, 1..60."""
        return int(min(60, max(1, round(self.waiting * self.seconds_per_request))))

    def submit(self, request: dict[str, Any], mode: str, timeout: float) -> Future:
        """Queue one request; raises :class:`Busy` when the queue is full."""
        job = Job(request, mode, time.monotonic() + timeout)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} requests are already waiting") from None
        return job.future

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._run_batch(jobs)
                    return
                jobs.append(job)
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[Job]) -> None:
        started = time.monotonic()
        self._work(jobs)
        per_request = (time.monotonic() - started) / len(jobs)
        self.seconds_per_request = 0.8 * self.seconds_per_request + 0.2 * per_request

    def _work(self, jobs: list[Job]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        by_mode: dict[str, list[tuple[Job, Any]]] = {}
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue  # the client went away
            if time.monotonic() > job.deadline:
                job.future.set_exception(Busy("the request waited past its time limit"))
                continue
            try:
                if self.sandbox is not None:
                    self.sandbox.check(job.request)
                prepared = self.predictor.prepare(**job.request)
            except Exception as err:  # noqa: BLE001 - the request's own error, for its client
                job.future.set_exception(err)
                continue
            by_mode.setdefault(job.mode, []).append((job, prepared))
        for mode, pairs in by_mode.items():
            try:
                predictions = self.predictor.predict_prepared([p for _, p in pairs], mode=mode)
            except Exception as err:  # noqa: BLE001 - fail these requests, keep serving
                log.exception("model call failed for a batch of %d", len(pairs))
                for job, _ in pairs:
                    job.future.set_exception(err)
                continue
            for (job, _), prediction in zip(pairs, predictions, strict=True):
                job.future.set_result(prediction)

    def _drain(self, error: Exception) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
