"""Project rules that must keep holding: no torchvision/torchaudio, offline loading,
no weights, data or run outputs in git."""

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "purrsight"
LIBRARY_PACKAGES = ("models", "data", "features", "inference")
TOP_LEVEL_ENTRY_POINTS = ("cli", "validate")  # above the library: they may import anything
TRAINER_MODULES = ("lightning", "mlflow")
BANNED_EVERYWHERE = ("torchvision", "torchaudio")
FLOORS_ABOVE_LIBRARY = ("purrsight.train", "purrsight.jobs", "purrsight.validation")


def module_name(path: Path) -> str:
    """``src/purrsight/inference/predictor.py`` -> ``purrsight.inference.predictor``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_files() -> list[Path]:
    """Every module of the library: models, data, features, inference and the top-level
    helpers (config, report, precision, …), walked from disk, not listed by hand."""
    files = [p for pkg in LIBRARY_PACKAGES for p in sorted((PACKAGE / pkg).rglob("*.py"))]
    top = [p for p in sorted(PACKAGE.glob("*.py")) if p.stem not in TOP_LEVEL_ENTRY_POINTS]
    return files + top


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module a source imports, at the top or inside a function, relative ones
    resolved (``from ..train import x`` in purrsight.data.y -> ``purrsight.train.x``)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def offending_imports(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    """``file: module`` for every import of a banned module or of anything below it."""
    found = []
    for path in files:
        names = imported_names(path.read_text(), module_name(path), path.stem == "__init__")
        for name in sorted(names):
            if any(name == b or name.startswith(b + ".") for b in banned):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_the_import_walker_sees_imports_inside_functions_and_relative_ones() -> None:
    source = "import os\n\ndef f():\n    import lightning.pytorch\n\nfrom ..train import phase2\n"
    names = imported_names(source, "purrsight.data.probe")
    assert {"os", "lightning.pytorch", "purrsight.train", "purrsight.train.phase2"} <= names
    assert "purrsight.data.train" not in names


def test_library_never_imports_the_trainer_jobs_or_cli() -> None:
    # Lightning and MLflow belong to training; train/, jobs/ and validation/ sit above the
    # library, cli.py above everything.
    banned = (*TRAINER_MODULES, *BANNED_EVERYWHERE, *FLOORS_ABOVE_LIBRARY, "purrsight.cli")
    files = library_files()
    assert len(files) > 50, "the walk found too few modules"
    assert offending_imports(files, banned) == []


def test_trainer_never_imports_cli_or_jobs() -> None:
    files = sorted((PACKAGE / "train").rglob("*.py")) + sorted(
        (PACKAGE / "validation").rglob("*.py")
    )
    assert offending_imports(files, ("purrsight.cli", "purrsight.jobs")) == []


def test_data_does_not_import_models() -> None:
    # data/ holds files, manifests, media decoding and prompts; features/ joins them to models/.
    files = sorted((PACKAGE / "data").rglob("*.py"))
    assert offending_imports(files, ("purrsight.models", "purrsight.features")) == []


def test_models_import_no_server_code() -> None:
    files = sorted((PACKAGE / "models").rglob("*.py"))
    assert offending_imports(files, ("fastapi", "uvicorn", "purrsight.inference")) == []


def test_torchvision_and_torchaudio_are_neither_installed_nor_required() -> None:
    assert importlib.util.find_spec("torchvision") is None
    assert importlib.util.find_spec("torchaudio") is None
    for req in (ROOT / "requirements").glob("*.txt"):
        text = req.read_text().lower()
        assert "torchvision" not in text and "torchaudio" not in text, req.name


def test_library_imports_neither_lightning_nor_mlflow_at_run_time() -> None:
    # A fresh interpreter imports every library module (transitive imports count too):
    # this test process has imported Lightning already.
    modules = [module_name(p) for p in library_files()]
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in {(*TRAINER_MODULES, *BANNED_EVERYWHERE)!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
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
