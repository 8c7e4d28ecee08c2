"""``purrsight validate`` / ``python validate_phase2.py``: the guide's nine pre-flight checks.

    python validate_phase2.py --config config/demo.yaml            # all nine
    python validate_phase2.py --config config/demo.yaml --quick    # the guide's quick set
    purrsight validate --config config/demo.yaml --json            # machine-readable

Each check runs the project's own code on a couple of real samples and prints
``PASS|FAIL|SKIP: <name> (<seconds>s)`` (a one-line reason under FAIL and SKIP), then
``Results: N/9 checks passed``. A check whose prerequisite failed is skipped, naming it.
The exit code is 0 only if every check that ran passed. Everything a check writes goes
to a temporary folder (check 7 briefly writes one hidden file into
``<output_dir>/checkpoints/`` to prove it is writable, and removes it).

On the demo config (2 CPU cores): --quick about 30 s, all nine 1 min 15 s (measured; up
to 1 min 20 s and 2 min 15 s while other jobs shared the cores).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from purrsight.validation.context import CheckFailed, CheckSkipped, Hooks, ValidationContext


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[ValidationContext], str]
    needs: tuple[int, ...]
    """1-based numbers of the checks whose results this one uses."""
    quick: bool


@dataclass
class CheckResult:
    name: str
    status: str
    """"PASS", "FAIL" or "SKIP"."""
    seconds: float
    detail: str
    """PASS: what was checked; FAIL / SKIP: the one-line reason."""
    notes: list[str] = field(default_factory=list)
    failed_root: str | None = None
    """The failed check behind this result (itself if it failed), for dependants' reasons."""


def _checks() -> list[Check]:
    from purrsight.validation import checks_model, checks_run, checks_setup

    return [
        Check("Configuration Validation", checks_setup.check_configuration, (), True),
        Check("Model Initialization", checks_setup.check_model_initialization, (1,), True),
        Check("Parameter Freezing", checks_setup.check_parameter_freezing, (2,), True),
        Check("Data Pipeline", checks_setup.check_data_pipeline, (2,), True),
        Check("Forward Pass", checks_model.check_forward_pass, (2, 4), True),
        Check("Training Step", checks_model.check_training_step, (5,), False),
        Check("Checkpoint Saving", checks_model.check_checkpoint_saving, (5,), False),
        Check("MLflow Logging", checks_run.check_mlflow_logging, (1,), False),
        Check("Short Training Run", checks_run.check_short_training_run, (2, 4, 5), True),
    ]


def run_validation(
    config_path: str | None,
    overrides: Sequence[str] = (),
    *,
    quick: bool = False,
    hooks: Hooks | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run the nine checks in the guide's order; ``on_result`` sees each as it finishes."""
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="purrsight-validate-") as tmp:
        ctx = ValidationContext(
            config_path, list(overrides), Path(tmp), quick=quick, hooks=hooks or Hooks()
        )
        for check in _checks():
            result = _run_one(check, ctx, results)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _run_one(check: Check, ctx: ValidationContext, done: list[CheckResult]) -> CheckResult:
    if ctx.quick and not check.quick:
        return CheckResult(check.name, "SKIP", 0.0, "not in the --quick set")
    unmet = [done[i - 1] for i in check.needs if done[i - 1].status != "PASS"]
    if unmet:
        first = unmet[0]
        if first.failed_root is not None:
            reason, root = f"needs {first.failed_root}, which failed", first.failed_root
            if first.failed_root != first.name:
                reason += f" (via {first.name})"
        else:
            reason, root = f"needs {first.name}, which was skipped ({first.detail})", None
        return CheckResult(check.name, "SKIP", 0.0, reason, failed_root=root)
    ctx.notes = []
    started = time.perf_counter()
    try:
        status, detail = "PASS", check.run(ctx)
    except CheckSkipped as err:
        status, detail = "SKIP", str(err)
    except Exception as err:  # noqa: BLE001 - any error is this check's failure, not a crash
        status, detail = "FAIL", _reason(err)
        ctx.note("".join(traceback.format_exception(err)).rstrip())
    seconds = time.perf_counter() - started
    root = check.name if status == "FAIL" else None
    return CheckResult(check.name, status, seconds, detail, ctx.notes, failed_root=root)


def _reason(err: Exception) -> str:
    """One line: our own errors as they are, anything else with its type."""
    from purrsight.config import ConfigError
    from purrsight.data.manifest import ManifestError
    from purrsight.data.media import MediaError

    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, CheckFailed | ConfigError | ManifestError | MediaError):
        return first
    return f"{type(err).__name__}: {first}"


# ----------------------------------------------------------------------------- output


def format_result(result: CheckResult, verbose: bool = False) -> str:
    lines = [f"{result.status}: {result.name} ({result.seconds:.2f}s)"]
    if result.status != "PASS" or verbose:
        lines.append(f"    {result.detail}")
    if verbose:
        lines += [f"      {line}" for note in result.notes for line in note.splitlines()]
    return "\n".join(lines)


def summary_line(results: Sequence[CheckResult]) -> str:
    passed = sum(r.status == "PASS" for r in results)
    return f"Results: {passed}/{len(results)} checks passed"


def as_json(results: Sequence[CheckResult]) -> dict:
    return {
        "checks": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 2), "detail": r.detail}
            for r in results
        ],
        "passed": sum(r.status == "PASS" for r in results),
        "total": len(results),
    }


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when no check failed (skipped ones do not count), else 1."""
    return 1 if any(r.status == "FAIL" for r in results) else 0


def validate_main(
    config_path: str | None,
    overrides: Sequence[str] = (),
    *,
    quick: bool = False,
    verbose: bool = False,
    as_json_output: bool = False,
    out: TextIO | None = None,
    hooks: Hooks | None = None,
) -> int:
    """Run, print (lines as checks finish, or one JSON document), return the exit code."""
    out = out or sys.stdout

    def show(result: CheckResult) -> None:
        if not as_json_output:
            print(format_result(result, verbose), file=out, flush=True)

    # Libraries that print would corrupt the JSON document: stdout goes to stderr meanwhile.
    with contextlib.redirect_stdout(sys.stderr):
        results = run_validation(config_path, overrides, quick=quick, hooks=hooks, on_result=show)
    if as_json_output:
        print(json.dumps(as_json(results), indent=2), file=out)
    else:
        print(summary_line(results), file=out)
    return exit_code(results)


def quiet_logs(verbose: bool) -> None:
    """Library and training logs (stderr) at WARNING, or INFO with ``--verbose``, unless
    ``LOG_LEVEL`` says otherwise; training runs read the same variable."""
    import logging
    import os

    os.environ.setdefault("LOG_LEVEL", "INFO" if verbose else "WARNING")
    level = os.environ["LOG_LEVEL"].upper()
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:  # Lightning's loggers set their own level and propagate
        handler.setLevel(level)
