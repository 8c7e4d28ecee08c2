"""Thread counts that follow the idle cores (purrsight.threads): a faked machine (its
/proc/stat text, this process's CPU time and a clock) and a faked torch thread count, so
every case runs anywhere and fast."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from purrsight import threads
from purrsight.threads import (
    AdaptiveThreads,
    CpuSample,
    busy_seconds,
    cgroup_cpu_limit,
    choose_threads,
    others_busy_cores,
)

HZ = 100


class FakeMachine:
    """Cores with busy/idle ticks, this process's CPU seconds, a clock; ``run`` advances
    them: ``others`` cores' worth busy with other processes, ``own`` with this one."""

    def __init__(self, cores: int = 2) -> None:
        self.ticks = [[0, 0] for _ in range(cores)]  # [busy, idle] per core
        self.own_s = 0.0
        self.now = 1000.0
        self.slept: list[float] = []

    def run(self, seconds: float, others: float = 0.0, own: float = 0.0) -> None:
        used = others + own
        assert used <= len(self.ticks) + 1e-9
        for i, core in enumerate(self.ticks):  # spread over the cores, fullest first
            share = min(1.0, max(0.0, used - i))
            core[0] += round(seconds * HZ * share)
            core[1] += round(seconds * HZ * (1 - share))
        self.own_s += seconds * own
        self.now += seconds

    def stat_text(self) -> str:
        total = [sum(c[0] for c in self.ticks), sum(c[1] for c in self.ticks)]
        lines = [f"cpu  {total[0]} 0 0 {total[1]} 0 0 0 0 0 0"]
        # busy split over user/system/steal, to check every busy field counts
        for i, (busy, idle) in enumerate(self.ticks):
            user, system = busy // 2, busy // 4
            steal = busy - user - system
            lines.append(f"cpu{i} {user} 0 {system} {idle} 0 0 0 {steal} 0 0")
        lines.append("intr 12345 0 0")
        return "\n".join(lines) + "\n"

    def sample(self, cores: Sequence[int]) -> CpuSample:
        return CpuSample(busy_seconds(self.stat_text(), cores, HZ), self.own_s, self.now)

    def clock(self) -> float:
        return self.now


class FakeTorch:
    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.calls: list[int] = []

    def get(self) -> int:
        return self.count

    def set(self, count: int) -> None:
        assert count >= 1, "torch.set_num_threads(0) is an error"
        self.count = count
        self.calls.append(count)


@pytest.fixture(autouse=True)
def no_user_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_PROCESS", None)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)


def adaptive(
    machine: FakeMachine, torch_: FakeTorch, busy_while_sleeping: float = 0.0, **kwargs
) -> AdaptiveThreads:
    """An AdaptiveThreads on the fakes; during start's sample, other processes keep
    ``busy_while_sleeping`` cores busy (this process sleeps)."""

    def sleep(seconds: float) -> None:
        machine.slept.append(seconds)
        machine.run(seconds, others=busy_while_sleeping)

    return AdaptiveThreads(
        cores=range(len(machine.ticks)),
        sample=machine.sample,
        get_threads=torch_.get,
        set_threads=torch_.set,
        sleep=sleep,
        clock=machine.clock,
        **kwargs,
    )


# ----------------------------------------------------------------------------- the decision


def test_idle_machine_gets_every_core() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    assert adaptive(machine, torch_).start() == 2
    assert torch_.count == 2
    assert machine.slept == [threads.START_WINDOW_S]


def test_one_busy_core_of_two_gives_one_thread() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    governor = adaptive(machine, torch_, busy_while_sleeping=1.0)
    assert governor.start() == 1
    assert torch_.calls == [1]
    assert governor.reason == "1.0 of 2 cores idle"


def test_never_zero_threads() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    assert adaptive(machine, torch_, busy_while_sleeping=2.0).start() == 1
    assert torch_.count == 1


@pytest.mark.parametrize(
    ("idle", "limit", "expected"),
    [
        (0.0, 2, 1),
        (0.7, 2, 1),
        (1.0, 2, 1),
        (1.5, 2, 1),  # a neighbour squeezed to half a core by our 2 threads still counts
        (1.74, 2, 1),
        (1.75, 2, 2),
        (2.0, 2, 2),
        (16.0, 8, 8),  # never more than torch's own count
        (11.9, 16, 12),
    ],
)
def test_choose_threads(idle: float, limit: int, expected: int) -> None:
    assert choose_threads(idle, limit) == expected


def test_limit_is_torchs_own_count() -> None:
    machine, torch_ = FakeMachine(4), FakeTorch(2)  # e.g. torch counts physical cores
    assert adaptive(machine, torch_).start() == 2


def test_cgroup_quota_caps_the_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_limit(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1)
    assert adaptive(FakeMachine(2), FakeTorch(2)).start() == 1


# ----------------------------------------------------------------------------- explicit wins


def test_omp_num_threads_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    governor = adaptive(machine, torch_, busy_while_sleeping=1.0, interval_s=0)
    assert governor.start() == 2
    machine.run(5.0, others=1.0, own=1.0)
    assert governor.poll() is None
    machine.run(5.0, others=1.0, own=1.0)
    assert governor.poll() is None
    assert torch_.calls == []
    assert "OMP_NUM_THREADS=2" in governor.reason


def test_a_count_set_elsewhere_stops_adapting() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    governor = adaptive(machine, torch_, interval_s=0)
    assert governor.start() == 2
    torch_.count = 2  # unchanged: still adapting
    machine.run(1.0, others=1.0, own=1.0)
    assert governor.poll() == 1
    torch_.count = 2  # the user's torch.set_num_threads(2)
    machine.run(1.0, others=1.0, own=1.0)
    assert governor.poll() is None
    machine.run(1.0, others=1.0, own=1.0)
    assert governor.poll() is None
    assert torch_.count == 2
    assert not governor.active


def test_without_proc_stat_torch_keeps_its_count() -> None:
    torch_ = FakeTorch(2)

    def missing(cores: Sequence[int]) -> CpuSample:
        raise FileNotFoundError("/proc/stat")

    governor = AdaptiveThreads(
        cores=[0, 1],
        sample=missing,
        get_threads=torch_.get,
        set_threads=torch_.set,
        sleep=lambda s: None,
    )
    assert governor.start() == 2
    assert governor.poll() is None
    assert torch_.calls == []


def test_proc_stat_gone_mid_run_stops_adapting() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    governor = adaptive(machine, torch_, interval_s=0)
    assert governor.start() == 2

    def gone(cores: Sequence[int]) -> CpuSample:
        raise ValueError("/proc/stat has no line for ['cpu1']")

    governor._sample = gone
    machine.run(1.0, others=1.0, own=1.0)
    assert governor.poll() is None
    assert not governor.active and torch_.count == 2


# ----------------------------------------------------------------------------- re-checks


def test_poll_follows_a_neighbour_that_comes_and_goes() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    governor = adaptive(machine, torch_, interval_s=30)
    assert governor.start() == 2
    # A busy process starts; this one keeps computing on its 2 threads and gets 1.4 cores.
    machine.run(10.0, others=0.6, own=1.4)
    assert governor.poll() is None  # not yet 30 s
    machine.run(25.0, others=0.6, own=1.4)
    assert governor.poll() == 1
    machine.run(31.0, others=1.0, own=1.0)
    assert governor.poll() is None  # still busy: no change
    assert torch_.count == 1
    machine.run(31.0, others=0.0, own=1.0)  # the neighbour finished
    assert governor.poll() == 2
    assert torch_.calls == [1, 2]


def test_own_cpu_time_is_not_counted_as_busy() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    governor = adaptive(machine, torch_, interval_s=0)
    governor.start()
    machine.run(3.0, own=2.0)  # this process alone, both cores flat out
    assert governor.poll() is None
    assert torch_.count == 2


def test_own_time_includes_children_that_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage run in a child process (the demo's Phase 1) is this process's own work:
    once the child is reaped its CPU time counts as own, not as a busy neighbour's."""
    import os

    import purrsight.threads as threads_module

    times = os.times_result((3.0, 1.0, 40.0, 2.0, 0.0))
    monkeypatch.setattr(threads_module.os, "times", lambda: times)
    sample = threads_module.read_sample(threads_module.allowed_cores())
    assert sample.own_s == pytest.approx(46.0)


def test_poll_reads_proc_stat_only_when_due() -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    reads = []

    def counted(cores: Sequence[int]) -> CpuSample:
        reads.append(machine.now)
        return machine.sample(cores)

    governor = adaptive(machine, torch_, interval_s=30)
    governor._sample = counted
    governor.start()
    for _ in range(5):
        machine.run(1.0, own=2.0)
        governor.poll()
    assert reads == [1000.0, 1000.2]  # start's two samples only
    machine.run(30.0, own=2.0)
    governor.poll()
    assert len(reads) == 3


def test_configure_decides_once_and_logs_it(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    machine, torch_ = FakeMachine(2), FakeTorch(2)
    made = []

    def factory(interval_s: float = 30.0) -> AdaptiveThreads:
        made.append(adaptive(machine, torch_, busy_while_sleeping=1.0, interval_s=interval_s))
        return made[-1]

    monkeypatch.setattr(threads, "AdaptiveThreads", factory)
    assert threads.poll() is None  # nothing before configure
    with caplog.at_level(logging.INFO, logger="purrsight.threads"):
        first = threads.configure()
        assert threads.configure() is first
    assert len(made) == 1
    assert [r.getMessage() for r in caplog.records] == ["threads: 1 (1.0 of 2 cores idle)"]
    machine.run(31.0, others=0.0, own=1.0)
    assert threads.poll() == 2


# ----------------------------------------------------------------------------- /proc/stat


def test_busy_seconds_reads_the_allowed_cores_only() -> None:
    text = (
        "cpu  900 10 90 5000 50 1 2 3 0 0\n"
        "cpu0 100 10 20 1000 40 1 2 3 0 0\n"  # busy: user nice system irq softirq steal
        "cpu1 800 0 70 4000 10 0 0 0 0 0\n"
        "intr 1 2 3\n"
    )
    assert busy_seconds(text, [0], 100) == pytest.approx(1.36)
    assert busy_seconds(text, [1], 100) == pytest.approx(8.7)
    assert busy_seconds(text, [0, 1], 100) == pytest.approx(10.06)
    with pytest.raises(ValueError, match="cpu2"):
        busy_seconds(text, [0, 2], 100)


def test_others_busy_cores() -> None:
    before = CpuSample(busy_s=100.0, own_s=10.0, wall_s=50.0)
    after = CpuSample(busy_s=104.0, own_s=12.0, wall_s=52.0)
    assert others_busy_cores(before, after) == pytest.approx(1.0)
    assert others_busy_cores(after, after) == 0.0
    # clock ticks round: our own time may exceed the busy ticks a little, never below 0
    assert others_busy_cores(before, CpuSample(101.9, 12.0, 52.0)) == 0.0


def test_real_proc_stat_parses() -> None:
    if not threads.PROC_STAT.is_file():
        pytest.skip("no /proc/stat")
    sample = threads.read_sample(threads.allowed_cores())
    assert sample.busy_s > 0 and sample.own_s > 0
