"""``purrsight <command>``: one entry point for data, training and the demo.

Heavy libraries (torch, Lightning, MLflow, transformers) are imported inside the
command that needs them, so ``purrsight --help`` answers at once.
Errors print as one line (exit code 2 for bad configuration or input, 1 for other
failures); ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from purrsight.arguments import (
    DEFAULT_CONFIG,
    GUIDE_CONFIG,
    add_config_args,
    add_phase2_args,
    add_validate_args,
    phase2_overrides,
)

BUNDLE_COMMANDS = frozenset({"export", "predict", "evaluate", "serve"})
"""Commands on a bundle: they get a thread count from the idle cores before they start
(``predict`` once its bundle is loaded: the loading is the sampling window). The
config-reading commands that compute with torch get it once their config is read (a bad
one is still refused in one line): ``demo``, ``cache-features``, ``validate``, and
training (``run_phase1`` / ``run_phase2`` decide it themselves)."""


def _load(args: argparse.Namespace):
    from purrsight.config import load_config

    return load_config(args.config, args.overrides)


# ----------------------------------------------------------------------------- commands


def cmd_data_demo(args: argparse.Namespace) -> int:
    from purrsight.data.demo import generate_demo_dataset, make_contact_sheet

    summary = generate_demo_dataset(
        args.out, n=args.n, seed=args.seed, n_subjects_per_label=args.subjects_per_label
    )
    summary["contact_sheet"] = str(
        make_contact_sheet(args.out, Path(args.out) / "contact_sheet.png")
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from purrsight.data.importers import import_dataset

    result = import_dataset(args.kind, args.source, args.out, args.mapping, copy=args.copy)
    print(json.dumps(result.summary(), indent=2))
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from purrsight.data.split import format_report, parse_ratios, split_file

    report = split_file(args.jsonl, args.by, parse_ratios(args.ratios), args.seed, args.out)
    print(format_report(report))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from purrsight.data.check import check_dataset

    config = _load(args)
    report = check_dataset(args.paths, config.media, config.labels)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.errors == 0 else 1


def cmd_train_phase1(args: argparse.Namespace) -> int:
    config = _load(args)  # refuse a bad config before the slow imports
    from purrsight.train.phase1 import run_phase1

    result = run_phase1(config, args.config)
    print(f"aligner: {result.aligner_path}")
    print(json.dumps({k: round(v, 4) for k, v in result.metrics.items()}, indent=2))
    return 0


def cmd_train_phase2(args: argparse.Namespace) -> int:
    args.overrides = phase2_overrides(args)
    config = _load(args)  # refuse a bad config before the slow imports
    from purrsight.train.phase2 import TrainingInterrupted, run_phase2

    try:
        result = run_phase2(config, args.config, resume=args.resume, debug=args.debug)
    except TrainingInterrupted as err:
        if args.debug and err.exit_code == 1:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"last checkpoint: {result.last_checkpoint}")
    print(json.dumps({k: round(v, 4) for k, v in result.metrics.items()}, indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from purrsight.validate import quiet_logs, validate_main

    quiet_logs(args.verbose)
    _adapt_threads()
    return validate_main(
        args.config,
        args.overrides,
        quick=args.quick,
        verbose=args.verbose,
        as_json_output=args.json,
    )


def cmd_cache_features(args: argparse.Namespace) -> int:
    config = _load(args)
    _adapt_threads()
    from purrsight.jobs.cache_features import fill_feature_cache

    print(json.dumps(fill_feature_cache(config, args.config), indent=2))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_load(args).model_dump(), sort_keys=False), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = _load(args)
    _adapt_threads()
    from purrsight.jobs.demo import run_demo

    run_demo(config, args.config, regenerate=args.regenerate)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from purrsight.inference.server.run import run_from_args

    return run_from_args(args)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purrsight", description="Read a cat's emotional state from what it sees and hears."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the main job on the embedded default: data → Phase 1 → summary"
    )
    add_config_args(demo)
    demo.add_argument(
        "--regenerate", action="store_true", help="remake the demo data even if present"
    )
    demo.set_defaults(func=cmd_demo)

    data = commands.add_parser("data", help="data sets: demo data, import, split").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND"
    )
    gen = data.add_parser("demo", help="generate the procedural demo data set")
    gen.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    gen.add_argument("--n", type=int, default=420, help="number of samples (default: 420)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    gen.add_argument(
        "--subjects-per-label",
        type=int,
        default=4,
        help="synthetic cats per label; splits are grouped by cat (default: 4)",
    )
    gen.set_defaults(func=cmd_data_demo)
    imp = data.add_parser("import", help="import a public cat data set (see docs/DATASETS.md)")
    imp.add_argument("kind", choices=["catmeows", "catsound", "folders"], help="source layout")
    imp.add_argument("source", help="the downloaded, unpacked data set folder")
    imp.add_argument("--out", required=True, help="new folder: all.jsonl, media/, dataset card")
    imp.add_argument("--mapping", help="YAML/JSON: source class -> emotion (default: built in)")
    imp.add_argument("--copy", action="store_true", help="copy media instead of hard-linking")
    imp.set_defaults(func=cmd_data_import)
    spl = data.add_parser("split", help="grouped, stratified train/val/test split + leakage report")
    spl.add_argument("jsonl", help="the JSONL to split (e.g. <import>/all.jsonl)")
    spl.add_argument("--by", default="subject_id", help="group key: subject_id or meta.<key>")
    spl.add_argument(
        "--ratios", default="0.8,0.1,0.1", help="train,val[,test] (default 0.8,0.1,0.1)"
    )
    spl.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    spl.add_argument("--out", default=None, help="output folder (default: the JSONL's folder)")
    spl.set_defaults(func=cmd_data_split)
    check = data.add_parser(
        "check", help="report every problem of a data set with its line (exit 1 on errors)"
    )
    check.add_argument("paths", nargs="+", help="JSONL files, or folders of train/val/test.jsonl")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_args(check, default=None)  # labels and media limits; None: the defaults
    check.set_defaults(func=cmd_data_check)

    train = commands.add_parser("train", help="training").add_subparsers(
        dest="train_command", required=True, metavar="PHASE"
    )
    p1 = train.add_parser("phase1", help="contrastive alignment of the frozen encoders")
    add_config_args(p1)
    p1.set_defaults(func=cmd_train_phase1)
    p2 = train.add_parser("phase2", help="projectors + LoRA on the LLM (the guide's Phase 2)")
    add_phase2_args(p2)
    p2.set_defaults(func=cmd_train_phase2)

    val = commands.add_parser("validate", help="the guide's 9 pre-flight checks of Phase 2")
    add_validate_args(val, DEFAULT_CONFIG)
    val.set_defaults(func=cmd_validate)

    cache = commands.add_parser(
        "cache-features", help="fill the feature cache (encoder + aligned features) for the data"
    )
    add_config_args(cache)
    cache.set_defaults(func=cmd_cache_features)

    cfg = commands.add_parser("config", help="configuration").add_subparsers(
        dest="config_command", required=True, metavar="CONFIG_COMMAND"
    )
    show = cfg.add_parser("show", help="print the resolved config")
    add_config_args(show)
    show.set_defaults(func=cmd_config_show)
    from purrsight.jobs.bundle_commands import add_bundle_commands  # stdlib-only module

    add_bundle_commands(commands)
    from purrsight.inference.server.run import add_arguments as add_serve_arguments

    serve = commands.add_parser("serve", help="HTTP API + web page for a bundle (FastAPI)")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def _adapt_threads() -> None:
    """torch's thread count from the cores other processes leave idle, decided and logged
    once (``threads: 2 (2.0 of 2 cores idle)``); an explicit ``OMP_NUM_THREADS`` wins.
    See :mod:`purrsight.threads`."""
    from purrsight.threads import configure

    configure()


def _setup_logging() -> None:
    """One console format for everything; ``LOG_LEVEL=DEBUG`` shows more."""
    from purrsight.console_log import console_handler, level_from_env

    logging.basicConfig(level=level_from_env(), handlers=[console_handler()], force=True)


EXTRA_OF_MODULE = {
    "lightning": "train",
    "mlflow": "train",
    "torchmetrics": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
}
"""Top-level modules of the optional extras (pyproject.toml) -> the extra that installs them."""


def missing_extra_message(err: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install when a command needs one that is not installed;
    None for any other missing module (a broken install, reported as it is)."""
    module = (err.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return (
        f"this command needs the '{extra}' extra (module {module} is not installed): "
        f"pip install 'purrsight[{extra}]'"
    )


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; known user errors become one line on stderr."""
    from purrsight.config import ConfigError
    from purrsight.data.manifest import ManifestError
    from purrsight.data.media import MediaError
    from purrsight.inference.errors import BundleError, InputError

    try:
        return func(args)
    except (ConfigError, ManifestError, MediaError, BundleError, InputError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if args.debug:
            raise
        message = missing_extra_message(err) if isinstance(err, ModuleNotFoundError) else None
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return 2
        print(
            f"error: {type(err).__name__}: {err} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def train_phase2_main(argv: list[str] | None = None) -> int:
    """``python train_phase2.py …``: the guide's entry point, the same code as
    ``purrsight train phase2`` with the guide's config/train_config.yaml as default."""
    parser = argparse.ArgumentParser(
        prog="train_phase2.py", description="Phase 2 training (= purrsight train phase2)."
    )
    add_phase2_args(parser, default_config=GUIDE_CONFIG)
    parser.set_defaults(debug=False)
    args = parser.parse_args(argv)
    _setup_logging()
    return run_guarded(cmd_train_phase2, args)


def validate_phase2_main(argv: list[str] | None = None) -> int:
    """``python validate_phase2.py …``: ``purrsight validate`` with the guide's default
    config/train_config.yaml."""
    parser = argparse.ArgumentParser(
        prog="validate_phase2.py", description="Phase 2 pre-flight checks (= purrsight validate)."
    )
    add_validate_args(parser, GUIDE_CONFIG)
    parser.set_defaults(debug=False)
    args = parser.parse_args(argv)
    _setup_logging()
    return run_guarded(cmd_validate, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    if args.command == "predict":
        from purrsight.threads import begin

        begin()  # decided once the bundle is loaded: loading is the sampling window
    elif args.command in BUNDLE_COMMANDS:
        _adapt_threads()
    code = run_guarded(args.func, args)
    if argv is None and args.command == "predict":
        _no_final_collection()
    return code


def _no_final_collection() -> None:
    """The process ends with the answer printed: Python's last garbage collection over
    every object (torch's hundreds of thousands) took ~0.5 s after it. Frozen objects are
    left to the OS (only when run as a command: a test calling main() goes on)."""
    import gc

    sys.stdout.flush()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
