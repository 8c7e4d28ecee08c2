"""Progress lines (:mod:`purrsight.progress`): when they come, what they say, where they go;
and Phase 2 training on tiny fixtures writing them into ``logs/training.log``."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from purrsight.config import load_config
from purrsight.progress import Progress, format_duration, format_value
from purrsight.train.phase2 import run_phase2
from test_demo_job import tiny_demo_overrides
from test_phase2_train import tiny_llama_run

LOGGER = "purrsight.test_progress"


class FakeClock:
    """Seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _progress(total: int, clock: FakeClock, **kwargs) -> Progress:
    return Progress("train", total, logging.getLogger(LOGGER), clock=clock, **kwargs)


def _run(progress: Progress, clock: FakeClock, steps: int, seconds: float) -> dict[int, str]:
    """``steps`` updates ``seconds`` apart: {step: line} for the steps that logged one."""
    lines = {}
    for step in range(1, steps + 1):
        clock.now += seconds
        line = progress.update(step, loss=0.5)
        if line is not None:
            lines[step] = line
    return lines


# ----------------------------------------------------------------------------- when


def test_a_line_every_n_steps_and_always_the_last() -> None:
    clock = FakeClock()
    lines = _run(_progress(12, clock, every_n=5), clock, 12, seconds=1.0)
    assert sorted(lines) == [5, 10, 12]


def test_slow_steps_give_a_line_at_least_every_30_seconds() -> None:
    clock = FakeClock()
    lines = _run(_progress(40, clock, every_n=1000), clock, 40, seconds=7.0)
    # 7 s steps: the first update at or past 30 s since the previous line logs.
    assert sorted(lines) == [5, 10, 15, 20, 25, 30, 35, 40]


def test_a_step_longer_than_30_seconds_logs_every_step() -> None:
    clock = FakeClock()
    lines = _run(_progress(4, clock, every_n=100), clock, 4, seconds=75.0)
    assert sorted(lines) == [1, 2, 3, 4]


def test_the_last_item_logs_once_even_if_reported_again() -> None:
    clock = FakeClock()
    progress = _progress(3, clock, every_n=100)
    assert progress.update(1) is None and progress.update(2) is None
    assert progress.update(3) is not None
    clock.now += 60  # well past every_seconds: still no second last line
    assert progress.update(3) is None


def test_every_n_counts_multiples_passed_not_hit_exactly() -> None:
    """Batches of 32 reports never land on a multiple of 6: crossing one is enough."""
    clock = FakeClock()
    progress = _progress(100, clock, every_n=6)
    assert progress.update(32) is not None
    assert progress.update(35) is None  # 35 // 6 == 32 // 6
    assert progress.update(36) is not None


def test_default_every_n_is_a_tenth_of_the_total() -> None:
    clock = FakeClock()
    lines = _run(_progress(50, clock), clock, 50, seconds=0.1)
    assert sorted(lines) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]


# ----------------------------------------------------------------------------- what


def test_eta_is_the_mean_time_per_step_times_the_steps_left() -> None:
    clock = FakeClock()
    progress = _progress(10, clock, every_n=5)
    lines = _run(progress, clock, 5, seconds=2.0)
    assert lines[5] == "train step 5/10 (50 %): loss 0.5, 2 s/step, ETA 10 s"


def test_eta_uses_the_mean_not_the_last_step() -> None:
    clock = FakeClock()
    progress = _progress(100, clock, every_n=1000)
    clock.now += 10.0  # step 1: 10 s
    assert progress.update(1) is None  # 10 s: no line yet
    clock.now += 20.0  # step 2: 20 s, so 15 s a step on average with 98 to go
    line = progress.update(2)
    assert line is not None and line.endswith("15 s/step, ETA 24 min 30 s")


def test_a_resumed_run_times_only_its_own_steps() -> None:
    clock = FakeClock()
    progress = _progress(100, clock, every_n=10, done=50)
    clock.now += 30.0  # 10 steps of 3 s
    line = progress.update(60)
    assert line == "train step 60/100 (60 %): 3 s/step, ETA 2 min 0 s"


def test_before_the_first_step_the_eta_is_unknown() -> None:
    clock = FakeClock()
    progress = _progress(10, clock, every_n=5, every_seconds=0.0)
    assert progress.update(0) == "train step 0/10 (0 %): ? s/step, ETA ?"


def test_fields_are_formatted_short() -> None:
    clock = FakeClock()
    progress = _progress(74, clock, every_n=12)
    clock.now += 12 * 5.0
    line = progress.update(12, loss=0.41234, lr=9.1e-4, **{"tokens/s": 1234.56}, epoch=0)
    assert line == (
        "train step 12/74 (16 %): loss 0.4123, lr 9.1e-04, tokens/s 1235, epoch 0, "
        "5 s/step, ETA 5 min 10 s"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (9.6, "10 s"), (59.4, "59 s"), (60, "1 min 0 s"), (361, "6 min 1 s"),
     (3600, "1 h 0 min"), (7530, "2 h 5 min"), (-3, "0 s")],
)  # fmt: skip
def test_durations_read_as_a_person_would_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.41234, "0.4123"), (9.1e-4, "9.1e-04"), (1234.56, "1235"), (3, "3"), (0.0, "0.0"),
     ("x", "x"), (float("nan"), "nan")],
)  # fmt: skip
def test_values_are_short(value: object, text: str) -> None:
    assert format_value(value) == text


# ----------------------------------------------------------------------------- where


def test_lines_reach_a_logging_handler_at_info(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger=LOGGER)
    _run(_progress(4, clock, every_n=2), clock, 4, seconds=1.0)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert [r.getMessage()[:16] for r in records] == ["train step 2/4 (", "train step 4/4 ("]


# ----------------------------------------------------------------------------- Phase 2


@pytest.fixture(scope="module")
def phase2_log(tmp_path_factory, tiny_encoder_dirs) -> str:
    """training.log of a 6-step Phase 2 run (tiny Llama, byte tokenizer) logging every 2."""
    root = tmp_path_factory.mktemp("progress")
    config = load_config(
        None,
        [
            *tiny_llama_run(root, tiny_encoder_dirs),
            f"output_dir={root / 'out'}",
            "num_epochs=2",
            "max_text_length=400",
            "log_every_n_steps=2",
        ],
    )
    result = run_phase2(config)
    return (result.output_dir / "logs" / "training.log").read_text(encoding="utf-8")


def test_phase2_writes_progress_lines_with_eta_to_the_training_log(phase2_log: str) -> None:
    pattern = re.compile(
        r"purrsight\.train\.phase2_module: phase2 step (\d+)/6 \(\d+ %\): epoch \d, "
        r"loss [\d.]+, lr \S+, tokens/s \d+(?:\.\d+)?, [\d.e+-]+ s/step, ETA (\S+ s|\S+ min \S+ s)$",
        re.MULTILINE,
    )
    steps = [int(m.group(1)) for m in pattern.finditer(phase2_log)]
    assert {2, 4, 6} <= set(steps), phase2_log[-3000:]
    assert steps == sorted(set(steps))  # one line per step at most, in order
    last = [line for line in phase2_log.splitlines() if "phase2 step 6/6" in line]
    assert len(last) == 1 and "(100 %)" in last[0] and last[0].endswith("ETA 0 s")


# ----------------------------------------------------------------------------- the demo


def _tiny_demo_config(root: Path, tiny_encoder_dirs: dict[str, Path]) -> Path:
    """A config file for ``purrsight demo`` on tiny models (as tests/test_demo_job.py)."""
    overrides = [*tiny_demo_overrides(root, tiny_encoder_dirs), "mlflow.enabled=false"]
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(load_config(None, overrides).model_dump()), encoding="utf-8")
    return path


@pytest.mark.slow
def test_demo_redirected_to_a_file_shows_every_stages_progress(tmp_path, tiny_encoder_dirs):
    """``purrsight demo > log 2>&1``: no terminal, so no progress bar; the log lines of
    every stage must be there (Phase 1 runs in a child process with its own logging)."""
    config = _tiny_demo_config(tmp_path, tiny_encoder_dirs)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "purrsight.cli", "demo", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    text = log_path.read_text(encoding="utf-8")
    assert done.returncode == 0, text[-3000:]
    for stage in (
        r"image encoder \(train\) sample (\d+)/\1 \(100 %\)",  # Phase 1's encoding
        r"phase1 step (\d+)/\1 \(100 %\)",
        r"phase2 step (\d+)/\1 \(100 %\)",
        r"reading heads: LLM scores \(val\) sample (\d+)/\1 \(100 %\)",  # the export's blend
        r"decode and encode sample (\d+)/\1 \(100 %\)",  # the bundle's evaluation
        r"label scoring sample (\d+)/\1 \(100 %\)",
    ):
        assert re.search(rf" INFO purrsight\.[\w.]+: {stage}: .*, ETA 0 s$", text, re.M), stage
