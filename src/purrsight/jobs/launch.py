"""What ``cluster_train.sh`` asks before it starts torchrun: is the config valid, and where
does the run write (its per-node logs go to ``<output_dir>/logs/distributed_training``).

    python -m purrsight.jobs.launch output-dir --config config/demo.yaml --set output_dir=x

takes the same arguments as ``train_phase2.py`` and prints the resolved ``output_dir``; a
bad config prints one line and exits 2, before any worker process is started. Imports
only the config code (no torch), so it answers in well under a second.
"""

from __future__ import annotations

import sys


def output_dir(argv: list[str]) -> str:
    """The ``output_dir`` that ``train_phase2.py <argv>`` would write to."""
    import argparse

    from purrsight.arguments import GUIDE_CONFIG, add_phase2_args, phase2_overrides
    from purrsight.config import load_config

    parser = argparse.ArgumentParser(prog="cluster_train.sh", add_help=False)
    add_phase2_args(parser, default_config=GUIDE_CONFIG)
    args, _ = parser.parse_known_args(argv)
    return str(load_config(args.config, phase2_overrides(args)).output_dir)


def main(argv: list[str] | None = None) -> int:
    from purrsight.config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "output-dir":
        print(
            "usage: python -m purrsight.jobs.launch output-dir TRAIN_PHASE2_ARGS…", file=sys.stderr
        )
        return 2
    try:
        print(output_dir(argv[1:]))
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
