"""Command-line arguments shared by more than one entry point (``purrsight``,
``train_phase2.py``, ``validate_phase2.py`` and ``cluster_train.sh``'s pre-flight).

Standard library only, so that a parser is built without importing torch.
"""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "config/demo.yaml"
GUIDE_CONFIG = "config/train_config.yaml"
"""The seed guide's scripts (``train_phase2.py``, ``validate_phase2.py``, ``cluster_train.sh``)
default to this config; ``purrsight`` itself defaults to the demo's."""


def positive_int(text: str) -> int:
    """argparse type: an integer above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_config_args(parser: argparse.ArgumentParser, default: str | None = DEFAULT_CONFIG) -> None:
    """``--config`` and repeatable ``--set KEY=VALUE`` (collected in ``args.overrides``)."""
    parser.add_argument("--config", default=default, help=f"YAML config (default: {default})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set phase1.epochs=5 (repeatable)",
    )


def add_phase2_args(parser: argparse.ArgumentParser, default_config: str = DEFAULT_CONFIG) -> None:
    """The guide's train_phase2.py flags, shared by ``purrsight train phase2``."""
    add_config_args(parser, default_config)
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="PATH",
        help="continue from <output_dir>/checkpoints/last.ckpt, or from PATH "
        "(e.g. an emergency-step=<n>.ckpt)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="N", help="override batch_size"
    )
    # SUPPRESS: `purrsight --debug train phase2` must keep the top-level flag's value.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="full tracebacks, autograd anomaly detection, at most 5 steps",
    )


def phase2_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus the guide's ``--batch-size N`` as one more override."""
    overrides = list(args.overrides)
    if args.batch_size is not None:
        overrides.append(f"batch_size={args.batch_size}")
    return overrides


def add_validate_args(parser: argparse.ArgumentParser, default_config: str) -> None:
    """``purrsight validate`` / ``validate_phase2.py`` flags."""
    add_config_args(parser, default_config)
    parser.add_argument("--quick", action="store_true", help="only the guide's quick set")
    parser.add_argument("--verbose", action="store_true", help="details and logs of each check")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
