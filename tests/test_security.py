"""Loads never run code: a crafted pickle is refused with one line naming the file, and
the command it carries (here: creating a marker file) never runs."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from purrsight.cli import main
from purrsight.config import ConfigError
from purrsight.models.aligner import load_aligner
from purrsight.models.encoders import load_aisfx_checkpoint
from purrsight.models.weights import WeightsError, load_weights
from purrsight.train.checkpointing import CHECKPOINT_FORMAT, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path, wrap=lambda payload: payload) -> Path:
    """A torch file whose unpickling would create ``marker``."""
    torch.save(wrap(_Payload(marker)), path)
    return path


def _lightning_shaped(payload) -> dict:
    """Looks like a Phase 2 checkpoint until the payload is unpickled."""
    return {
        "state_dict": {"model.projectors.image.0.weight": torch.zeros(2, 2)},
        "hyper_parameters": {"format": CHECKPOINT_FORMAT, "evil": payload},
    }


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PWNED"
    # The payload really would run without weights_only: proves the test can fail.
    torch.load(_crafted(tmp_path / "probe.pt", path), weights_only=False)
    assert path.exists()
    path.unlink()
    return path


def _assert_refused(err: BaseException, path: Path, marker: Path) -> None:
    text = str(err)
    assert text.startswith(f"{path}: refused to load this ") and "\n" not in text
    assert "GLOBAL posix.system" in text or "GLOBAL os.system" in text
    assert not marker.exists()


def test_load_weights_refuses_a_crafted_pickle(tmp_path: Path, marker: Path) -> None:
    path = _crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    _assert_refused(err.value, path, marker)


def test_a_crafted_aligner_is_refused(tmp_path: Path, marker: Path) -> None:
    path = _crafted(tmp_path / "aligner.pt", marker, lambda p: {"heads.image.0.weight": p})
    (tmp_path / "aligner.json").write_text(
        '{"input_dims": {"image": 4, "text": 4}, "embed_dim": 4, "hidden_dim": 4, "dropout": 0.0}'
    )
    with pytest.raises(WeightsError) as err:
        load_aligner(path)
    _assert_refused(err.value, path, marker)


def test_a_crafted_audio_encoder_checkpoint_is_refused(tmp_path: Path, marker: Path) -> None:
    path = _crafted(tmp_path / "checkpoint.pth", marker, lambda p: ({"embedding_net.w": p}, {}))
    with pytest.raises(WeightsError) as err:
        load_aisfx_checkpoint(path)
    _assert_refused(err.value, path, marker)


def test_a_crafted_resume_checkpoint_is_refused(tmp_path: Path, marker: Path) -> None:
    path = _crafted(tmp_path / "last.ckpt", marker, _lightning_shaped)
    with pytest.raises(ConfigError) as err:
        read_checkpoint(path)
    _assert_refused(err.value, path, marker)


def test_lightning_resume_path_loads_weights_only_whatever_it_is_asked(
    tmp_path: Path, marker: Path
) -> None:
    from purrsight.train.phase2_module import AtomicCheckpointIO

    path = _crafted(tmp_path / "last.ckpt", marker, _lightning_shaped)
    with pytest.raises(ConfigError) as err:
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    _assert_refused(err.value, path, marker)


def test_train_phase2_resume_from_a_crafted_checkpoint_is_one_line_exit_2(
    tmp_path: Path, marker: Path, capsys
) -> None:
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "config.json").write_text("{}")  # only checked to exist before the resume file
    path = _crafted(tmp_path / "emergency-step=3.ckpt", marker, _lightning_shaped)
    code = main(
        [
            "train",
            "phase2",
            "--config",
            str(ROOT / "config/demo.yaml"),
            "--set",
            f"llm_model_name={llm}",
            "--set",
            f"output_dir={tmp_path / 'out'}",
            "--set",
            "mlflow.enabled=false",
            "--resume",
            str(path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]  # logs aside
    _assert_refused(line.removeprefix("error: "), path, marker)


def test_a_damaged_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match=r"last\.ckpt: not a readable checkpoint \(") as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value)


def _call_name(node: ast.Call) -> str:
    """``torch.load`` for ``torch.load(...)``, ``load`` for ``load(...)``."""
    func, parts = node.func, []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_every_load_in_src_is_weights_only() -> None:
    """The audit, kept: torch.load only inside models/weights.py (weights_only=True), no
    load asked for weights_only=False, no pickle/joblib loads, no remote code."""
    offenders = []
    for path in sorted((ROOT / "src" / "purrsight").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            if name == "torch.load" and (
                rel != "src/purrsight/models/weights.py" or flags.get("weights_only") is not True
            ):
                offenders.append(f"{rel}:{node.lineno}: {name} outside load_weights")
            if "load" in name.lower() and flags.get("weights_only", True) is not True:
                offenders.append(f"{rel}:{node.lineno}: {name}(weights_only=...)")
            if name.split(".")[0] in ("pickle", "joblib", "dill", "cloudpickle") and "load" in name:
                offenders.append(f"{rel}:{node.lineno}: {name}")
            if flags.get("trust_remote_code") is True or flags.get("allow_pickle") is True:
                offenders.append(f"{rel}:{node.lineno}: {name} with an unsafe flag")
    assert offenders == []
