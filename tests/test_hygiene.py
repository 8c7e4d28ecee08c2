"""Project rules that must keep holding: no torchvision/torchaudio, offline loading,
no weights, data or run outputs in git."""

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_MODULES = [
    "purrsight.models.encoders",
    "purrsight.models.audio_features",
    "purrsight.models.aligner",
    "purrsight.models.llm",
    "purrsight.models.mm_llm",
    "purrsight.data.media",
    "purrsight.data.demo",
    "purrsight.data.instruction",
    "purrsight.features.raw",
    "purrsight.data.check",
    "purrsight.models.weights",
    "purrsight.inference.predictor",
    "purrsight.inference.export",
    "purrsight.inference.evaluate",
    "purrsight.inference.plots",
    "purrsight.inference.commands",
    "purrsight.inference.server.app",
    "purrsight.inference.server.run",
]


def test_torchvision_and_torchaudio_are_neither_installed_nor_required() -> None:
    assert importlib.util.find_spec("torchvision") is None
    assert importlib.util.find_spec("torchaudio") is None
    for req in (ROOT / "requirements").glob("*.txt"):
        text = req.read_text().lower()
        assert "torchvision" not in text and "torchaudio" not in text, req.name


def test_library_imports_neither_lightning_nor_mlflow() -> None:
    # A fresh interpreter: this test process has imported Lightning already.
    code = (
        "import sys, importlib\n"
        f"for m in {LIBRARY_MODULES!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('lightning', 'mlflow', 'torchvision', 'torchaudio') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""


def test_hub_access_is_local_only() -> None:
    # Every Hugging Face load in the library passes local_files_only=True.
    for path in (ROOT / "src" / "purrsight").rglob("*.py"):
        text = path.read_text()
        for line_no, line in enumerate(text.splitlines(), 1):
            if ".from_pretrained(" in line and "def " not in line:
                window = "\n".join(text.splitlines()[line_no - 1 : line_no + 8])
                assert "local_files_only" in window or "gguf_file" in window, f"{path}:{line_no}"


def test_no_weights_data_or_outputs_tracked_in_git() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    banned_dirs = ("outputs/", "checkpoints/", "models/", "data/", "mlruns/", ".venv/")
    banned_ext = (".pt", ".pth", ".ckpt", ".safetensors", ".gguf", ".wav", ".png", ".db")
    for name in tracked:
        assert not name.startswith(banned_dirs), name
        assert not name.endswith(banned_ext), name
        assert (ROOT / name).stat().st_size < 1024 * 1024, name
