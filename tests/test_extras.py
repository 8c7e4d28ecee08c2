"""Packaging follows the split: predict/evaluate/export run without the 'train' and 'serve'
extras, and a command that needs a missing extra says which one to install."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("lightning", "mlflow", "torchmetrics", "fastapi", "uvicorn", "multipart")
# None in sys.modules makes `import x` raise ModuleNotFoundError, as if x were not installed.
BLOCK = f"import sys\nfor m in {EXTRA_MODULES!r}: sys.modules[m] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=ROOT
    )


def test_the_predict_path_needs_neither_trainer_nor_server() -> None:
    out = _python(
        "import purrsight.jobs.bundle_commands, purrsight.inference.predictor\n"
        "import purrsight.inference.evaluate, purrsight.inference.export\n"
        "from purrsight.cli import build_parser\n"
        "build_parser().parse_args(['predict', '--model', 'b', '--image', 'x.png'])\n"
        "print('ok')\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_training_without_the_train_extra_names_it() -> None:
    out = _python(
        "from purrsight.cli import main\n"
        "sys.exit(main(['train', 'phase1', '--config', 'config/demo.yaml']))\n"
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "needs the 'train' extra" in out.stderr
    assert "pip install 'purrsight[train]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_serving_without_the_serve_extra_names_it(tmp_path: Path) -> None:
    out = _python(
        f"from purrsight.cli import main\nsys.exit(main(['serve', '--model', {str(tmp_path)!r}]))\n"
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'purrsight[serve]'" in out.stderr
