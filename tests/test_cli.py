"""The command line: one-line errors with non-zero exit codes, tracebacks only with --debug."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from purrsight.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "data", "train", "config"):
        assert command in out


def test_bad_config_key_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("phase1:\n  epochs: 2\n  batchsize: 4\n")
    code = main(["train", "phase1", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "unknown key 'phase1.batchsize'" in err and "Traceback" not in err


def test_corrupt_media_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "0.png").write_bytes(b"definitely not a png")
    line = {"id": "s-0", "image": "img/0.png", "response": "A cat.", "label": "content"}
    for split in ("train", "val"):
        (data / f"{split}.jsonl").write_text(json.dumps(line) + "\n")
    code = main(
        [
            "train",
            "phase1",
            "--config",
            str(ROOT / "config/demo.yaml"),
            "--set",
            f"phase1.data_dir={data}",
            "--set",
            "mlflow.enabled=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{data / 'img' / '0.png'}: not a decodable image" in err
    assert "sample 's-0'" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_r: many\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    quiet = subprocess.run(
        [sys.executable, "-m", "purrsight.cli", "config", "show", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert quiet.returncode == 2
    assert quiet.stderr.startswith("error: ") and "Traceback" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-m", "purrsight.cli", "--debug", "config", "show", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "lora_r" in loud.stderr
