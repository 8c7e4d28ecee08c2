"""The GPU report's CPU smoke mode runs every variant end to end and writes its JSON, and
the script imports nothing beyond torch / transformers / peft (the GPU machine has no
pydantic, mlflow or lightning)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402


def test_smoke_mode_reports_every_variant(tmp_path) -> None:
    assert (
        gpu_report.main(["--smoke", "--warmup", "0", "--steps", "1", "--out", str(tmp_path)]) == 0
    )
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert set(report["variants"]) == {v.name for v in gpu_report.VARIANTS if not v.compile}
    for name, result in report["variants"].items():
        assert "error" not in result, (name, result)
        assert result["tokens_per_s"] > 0 and result["loss_last"] > 0
        # Needed work never exceeds what a variant executes; padding makes baseline's larger.
        assert result["model_tflops_per_step"] <= result["executed_tflops_per_step"] + 1e-12
    base = report["variants"]["baseline"]
    assert base["executed_tflops_per_step"] > base["model_tflops_per_step"]
    assert "ours_vs_baseline" in report["ratios"]


def test_flop_formula_for_the_qwen_shape() -> None:
    shape = gpu_report.QWEN25_05B
    layer = 2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864
    counts = {"n_dec": 24 * layer, "n_head": 151936 * 896, "n_lora": 0}
    flops = gpu_report.model_flops([512], counts, shape)
    expected = 4 * 24 * layer * 512 + 12 * 24 * 896 * 512**2 + 4 * 151936 * 896 * 204
    assert flops == expected


def test_imports_need_no_pydantic_mlflow_or_lightning() -> None:
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu_report; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'mlflow', 'lightning'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
