"""Torch CPU threads that follow the cores actually idle, not the cores the machine has.

torch runs its CPU kernels on OpenMP threads, one per core by default. That is fastest on
an idle machine, and slow on a busy one: with 2 threads on 2 cores and one other
CPU-bound process, every parallel region ends in a barrier that waits for the thread the
scheduler has just preempted. Measured on the 2-core demo machine
(``benchmarks/busy_machine.py``, ``benchmarks/RESULTS.md`` "Busy machine"), a Phase 2
step took 2.9 s alone and 10.0 s beside a busy loop on 2 threads (3.4x), against
5.2 / 4.9 s on 1 thread; choosing the count from the idle cores gave 2.6 s alone and
4.7 s busy (1.8x; inference forwards 0.95 / 1.88 s). ``OMP_WAIT_POLICY=PASSIVE`` also
helped when busy (1.7x) but cost 6-30 % alone, so it is not set.

So the thread count is chosen from the cores other processes leave idle:

* :func:`idle_cores` reads the per-core busy time of the cores this process may run on
  (``/proc/stat``, the ``cpuN`` lines of ``os.sched_getaffinity``), subtracts this
  process's own CPU time (:func:`os.times`: all its threads), and divides by the wall
  time: what is left is what other processes used. It works over any window, even
  while this process computes, so training re-checks without ever waiting.
* :func:`choose_threads` turns idle cores into threads: a core counts when at least
  three quarters of it is idle, at least 1 thread, at most the cores torch would use
  (and a cgroup CPU quota, where there is one). Three quarters, not a half: measured
  while this process's own threads compete, a busy neighbour gets only 1/2-2/3 of a
  core, and it must still count as a whole one.
* :class:`AdaptiveThreads` applies it: a blocking 0.2 s sample at start, then
  :meth:`~AdaptiveThreads.poll` (cheap: two small file reads) once per training step,
  which re-decides every ``interval_s`` (30 s) from the time since the last decision.

An explicit choice always wins: with ``OMP_NUM_THREADS`` in the environment nothing is
changed, and once anything else calls ``torch.set_num_threads`` (a different count than
the one set here) adaptation stops for the rest of the process. Where ``/proc/stat`` is
not there (not Linux) the count is left as torch chose it.

:func:`configure` is what entry points call: the first call makes the decision and logs
it once (``threads: 2 of 2 cores idle``); :func:`poll` is the per-step re-check. The
module imports torch only when a count is applied, so it can be used before torch loads.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_THREADS = "OMP_NUM_THREADS"
"""The user's explicit thread count: when set, this module changes nothing."""
DEFAULT_INTERVAL_S = 30.0
"""How often :meth:`AdaptiveThreads.poll` re-decides."""
START_WINDOW_S = 0.2
"""The blocking sample of :meth:`AdaptiveThreads.start`."""
MIN_WINDOW_S = 0.1
"""Shorter windows are too few clock ticks (10 ms each) to decide on."""
PROC_STAT = Path("/proc/stat")
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class CpuSample:
    """Cumulative counters at one instant; two of them make a measurement."""

    busy_s: float
    """Busy CPU seconds (all processes) on the cores this process may use, since boot."""
    own_s: float
    """CPU seconds of this process (user + system, all threads) and of its children that
    ended: a stage the demo runs in a child process (Phase 1) is its own work, not a
    neighbour's (counted as others, it cut Phase 2 to 1 thread for its first 30 s)."""
    wall_s: float
    """A monotonic clock."""


def allowed_cores() -> list[int]:
    """The CPUs this process may run on (its affinity; all of them where unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def busy_seconds(stat_text: str, cores: Sequence[int], ticks_per_s: float) -> float:
    """Busy seconds of ``cores`` in ``/proc/stat`` text: every field but idle and iowait
    (user, nice, system, irq, softirq, steal; guest time is inside user already).

    Raises:
        ValueError: a core of ``cores`` has no ``cpuN`` line.
    """
    wanted = {f"cpu{c}" for c in cores}
    ticks = 0
    found = set()
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        fields = [int(v) for v in rest.split()]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        ticks += user + nice + system + irq + softirq + steal
        found.add(name)
    if found != wanted:
        raise ValueError(f"/proc/stat has no line for {sorted(wanted - found)}")
    return ticks / ticks_per_s


def read_sample(cores: Sequence[int]) -> CpuSample:
    """The counters now, from ``/proc/stat`` and :func:`os.times`."""
    ticks = float(os.sysconf("SC_CLK_TCK"))
    busy = busy_seconds(PROC_STAT.read_text(), cores, ticks)
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system
    return CpuSample(busy, own, time.monotonic())


def others_busy_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores' worth of CPU that other processes used between two samples (>= 0)."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / wall)


def cgroup_cpu_limit(path: Path = CPU_MAX) -> int | None:
    """Whole CPUs a cgroup v2 quota allows (``cpu.max`` "quota period"), None if none."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


IDLE_FRACTION = 0.75
"""The share of a core that must be idle for it to get a thread."""


def choose_threads(idle: float, limit: int) -> int:
    """Threads for ``idle`` idle cores: whole cores, a partly busy one counting when at
    least ``IDLE_FRACTION`` of it is idle; at least 1, at most ``limit``. One busy
    process on 2 cores leaves 1.0-1.5 idle (1.5 while our 2 threads compete with it):
    1 thread."""
    return max(1, min(limit, math.floor(idle + 1 - IDLE_FRACTION + 1e-9)))


def explicit_threads() -> int | None:
    """The user's ``OMP_NUM_THREADS`` as a count (None if unset or not a number)."""
    value = os.environ.get(ENV_THREADS, "").strip()
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _torch_get() -> int:
    import torch

    return torch.get_num_threads()


def _torch_set(count: int) -> None:
    import torch

    torch.set_num_threads(count)


class AdaptiveThreads:
    """Keeps torch's thread count at the cores other processes leave idle.

    Args:
        interval_s: :meth:`poll` re-decides this often (0: at every poll at least
            ``MIN_WINDOW_S`` after the last decision).
        cores: the CPUs to watch (default: this process's affinity).
        limit: the most threads (default: torch's own count when first applied, capped
            by a cgroup quota).
        sample: reads a :class:`CpuSample` for ``cores`` (tests pass a fake); its
            ``wall_s`` must come from ``clock``.
        get_threads / set_threads: torch's thread count (tests pass fakes).
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        cores: Sequence[int] | None = None,
        limit: int | None = None,
        sample: Callable[[Sequence[int]], CpuSample] = read_sample,
        get_threads: Callable[[], int] = _torch_get,
        set_threads: Callable[[int], None] = _torch_set,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.cores = list(cores) if cores is not None else allowed_cores()
        self.limit = limit
        self._sample = sample
        self._get = get_threads
        self._set = set_threads
        self._sleep = sleep
        self._clock = clock
        self.current: int | None = None
        """The count this object last set (None before :meth:`start`)."""
        self.active = False
        """Whether :meth:`poll` still adapts (False: explicit setting, no /proc/stat)."""
        self.reason = "not started"
        self._since: CpuSample | None = None
        self._begun: CpuSample | None = None

    def begin(self) -> None:
        """Take the first sample of :meth:`start`'s window now (cheap: no torch import),
        so that work done meanwhile (imports, loading a model) is the window and
        :meth:`start` need not sleep."""
        if explicit_threads() is None:
            try:
                self._begun = self._sample(self.cores)
            except (OSError, ValueError):
                self._begun = None

    def start(self, window_s: float = START_WINDOW_S) -> int:
        """Decide from a ``window_s`` sample (this process idle meanwhile) and apply it;
        returns torch's thread count. Logs the choice once."""
        explicit = explicit_threads()
        if explicit is not None:
            self.reason = f"{ENV_THREADS}={explicit} set by the user"
            log.info("threads: %d (%s)", self._get(), self.reason)
            return self._get()
        try:
            before = self._begun or self._sample(self.cores)
            # A window begun earlier (begin()) has run while this process worked: its own
            # CPU time is subtracted, so only what is missing of it is slept.
            self._sleep(max(0.0, window_s - (self._clock() - before.wall_s)))
            after = self._sample(self.cores)
        except (OSError, ValueError) as err:
            self.reason = f"torch's default, idle cores unknown ({err})"
            log.info("threads: %d (%s)", self._get(), self.reason)
            return self._get()
        if self.limit is None:
            quota = cgroup_cpu_limit()
            self.limit = min(self._get(), len(self.cores), quota or len(self.cores))
        self.active = True
        self.current = self._get()  # set_num_threads only on a change
        count = self._decide(before, after)
        log.info("threads: %d (%s)", count, self.reason)
        return count

    def poll(self) -> int | None:
        """Cheap; call often (once per training step). Every ``interval_s`` it decides
        again from the time since the last decision; returns the new count when it
        changed, else None."""
        if not self.active:
            return None
        if self.current is not None and self._get() != self.current:
            self.active = False  # someone else set a count: theirs stands
            log.info("threads: %d set elsewhere; no longer adapting", self._get())
            return None
        if self._since is not None and self._clock() - self._since.wall_s < max(
            self.interval_s, MIN_WINDOW_S
        ):
            return None  # the usual case: one clock read
        try:
            now = self._sample(self.cores)
        except (OSError, ValueError) as err:  # e.g. a core went offline
            self.active = False
            log.info("threads: %d; no longer adapting (%s)", self.current, err)
            return None
        if self._since is None:
            self._since = now
            return None
        previous = self.current
        count = self._decide(self._since, now)
        if count != previous:
            log.info("threads: %d, was %d (%s)", count, previous, self.reason)
            return count
        return None

    def _decide(self, before: CpuSample, after: CpuSample) -> int:
        assert self.limit is not None
        others = others_busy_cores(before, after)
        idle = max(0.0, len(self.cores) - others)
        count = choose_threads(idle, self.limit)
        self.reason = f"{idle:.1f} of {len(self.cores)} cores idle"
        if count != self.current:
            self._set(count)
            self.current = count
        self._since = after
        return count


_PROCESS: AdaptiveThreads | None = None


def configure(interval_s: float = DEFAULT_INTERVAL_S) -> AdaptiveThreads:
    """This process's :class:`AdaptiveThreads`, started on the first call (the choice is
    logged then); later calls return the same one."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = AdaptiveThreads(interval_s)
    if _PROCESS.reason == "not started":  # new, or begun by begin()
        _PROCESS.start()
    return _PROCESS


def begin() -> None:
    """Begin the process's first decision window now; :func:`configure` ends it (a
    command that loads a model first decides without waiting; see
    :meth:`AdaptiveThreads.begin`)."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = AdaptiveThreads()
        _PROCESS.begin()


def poll() -> int | None:
    """Re-check the process's choice (see :meth:`AdaptiveThreads.poll`); nothing before
    :func:`configure`."""
    return _PROCESS.poll() if _PROCESS is not None else None
