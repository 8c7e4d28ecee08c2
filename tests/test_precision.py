"""Precision that follows the hardware: ``auto`` picks bf16 only where the device does it
natively, an explicit bf16 on a CPU without it is kept but warned about, ``32`` is kept.

The CPU is faked by replacing :func:`purrsight.precision.cpu_capabilities`, so every case
runs on any machine."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from purrsight import precision
from purrsight.config import Config, ConfigError, load_config
from purrsight.precision import (
    cpu_bf16_flags,
    cpu_features_summary,
    resolve_precision,
    with_resolved_precision,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# cpuinfo's keys as torch.cpu.get_capabilities() gives them.
AVX2_ONLY = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
ZEN4 = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
SAPPHIRE_RAPIDS = {"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": True}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the once-per-process warning afresh."""
    monkeypatch.setattr(precision, "_WARNED", set())


def fake_cpu(monkeypatch: pytest.MonkeyPatch, caps: dict[str, bool]) -> None:
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: dict(caps))
    level = "AVX512" if caps.get("avx512_f") else "AVX2"
    monkeypatch.setattr(precision, "aten_cpu_capability", lambda: level)


# ----------------------------------------------------------------------------- auto


@pytest.mark.parametrize(("caps", "flag"), [(ZEN4, "avx512_bf16"), (SAPPHIRE_RAPIDS, "amx_bf16")])
def test_auto_picks_bf16_where_the_cpu_has_it_natively(monkeypatch, caplog, caps, flag) -> None:
    fake_cpu(monkeypatch, caps)
    with caplog.at_level(logging.WARNING, logger="purrsight.precision"):
        choice = resolve_precision("auto", "cpu")
    assert choice.precision == "bf16-mixed"
    assert choice.autocast_dtype is torch.bfloat16
    assert flag in choice.reason and choice.reason.startswith("auto")
    assert not caplog.records


def test_auto_stays_fp32_where_torch_is_capped_below_avx512(monkeypatch) -> None:
    """ATEN_CPU_CAPABILITY=avx2 (and oneDNN / MKL held at AVX2 with it) on a CPU that has
    avx512_bf16: bf16 would take the slow path, so auto keeps fp32 and says why."""
    fake_cpu(monkeypatch, ZEN4)
    monkeypatch.setattr(precision, "aten_cpu_capability", lambda: "AVX2")
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == "32" and "capability AVX2" in choice.reason
    assert not precision.cpu_has_native_bf16()
    assert precision.inference_dtype("auto", "cpu") is torch.float32


def test_auto_stays_fp32_on_an_avx2_only_cpu(monkeypatch, caplog) -> None:
    fake_cpu(monkeypatch, AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="purrsight.precision"):
        choice = resolve_precision("auto", "cpu")
    assert choice.precision == "32" and choice.autocast_dtype is None
    assert "avx512_bf16" in choice.reason and "amx_bf16" in choice.reason
    assert not caplog.records  # auto chose; nothing to warn about


@pytest.mark.parametrize(("native", "want"), [(True, "bf16-mixed"), (False, "32")])
def test_auto_on_cuda_follows_the_gpus_bf16(monkeypatch, native, want) -> None:
    monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda: native)
    choice = resolve_precision("auto", "cuda")
    assert choice.precision == want and "CUDA" in choice.reason


def test_auto_elsewhere_is_fp32() -> None:
    assert resolve_precision("auto", "mps").precision == "32"


# ----------------------------------------------------------------------------- explicit


def test_explicit_bf16_without_native_bf16_is_kept_with_one_warning(monkeypatch, caplog) -> None:
    fake_cpu(monkeypatch, AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="purrsight.precision"):
        first = resolve_precision("bf16-mixed", "cpu")
        second = resolve_precision("bf16-mixed", "cpu")  # plan_run, the checks: same run
    assert first.precision == second.precision == "bf16-mixed"
    assert first.autocast_dtype is torch.bfloat16
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert caplog.records[0].levelno == logging.WARNING
    assert "avx512_bf16" in message and "amx_bf16" in message
    assert "slow" in message and "precision: auto" in message and "'32'" in message


def test_explicit_bf16_with_native_bf16_does_not_warn(monkeypatch, caplog) -> None:
    fake_cpu(monkeypatch, ZEN4)
    with caplog.at_level(logging.WARNING, logger="purrsight.precision"):
        assert resolve_precision("bf16-mixed", "cpu").precision == "bf16-mixed"
    assert not caplog.records


@pytest.mark.parametrize("caps", [AVX2_ONLY, ZEN4])
def test_explicit_32_is_kept(monkeypatch, caps) -> None:
    fake_cpu(monkeypatch, caps)
    choice = resolve_precision("32", "cpu")
    assert choice.precision == "32" and choice.autocast_dtype is None


def test_16_mixed_needs_cuda() -> None:
    with pytest.raises(ConfigError, match=r"^precision: '16-mixed' needs a CUDA GPU"):
        resolve_precision("16-mixed", "cpu")
    assert resolve_precision("16-mixed", "cuda").autocast_dtype is torch.float16


def test_a_value_that_is_no_precision_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^precision: 'fp8'"):
        resolve_precision("fp8", "cpu")


# ----------------------------------------------------------------------------- detection


def test_summary_names_the_flags_and_the_capability(monkeypatch) -> None:
    fake_cpu(monkeypatch, ZEN4)
    monkeypatch.setattr(precision, "aten_cpu_capability", lambda: "AVX512")
    assert cpu_features_summary() == "avx512_bf16 yes, amx_bf16 no, capability AVX512"


def test_this_torch_reports_the_bf16_flags() -> None:
    """The names the decision reads exist in this torch's capability map (a rename would
    otherwise make every CPU look bf16-less without any error)."""
    caps = precision.cpu_capabilities()
    if caps.get("architecture", "x86_64") not in ("x86_64", "x86", "AMD64"):
        pytest.skip("the bf16 flags are x86 features")
    assert set(precision.CPU_BF16_FLAGS) <= set(caps)


def test_older_torch_probes_are_used_when_the_capability_map_fails(monkeypatch) -> None:
    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert cpu_bf16_flags() == {"avx512_bf16": True, "amx_bf16": False}


def test_no_way_to_tell_counts_as_no_native_bf16(monkeypatch) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
        monkeypatch.delattr(torch._C._cpu, name, raising=False)
    assert cpu_bf16_flags() == {"avx512_bf16": False, "amx_bf16": False}
    assert resolve_precision("auto", "cpu").precision == "32"


# ----------------------------------------------------------------------------- config


def test_config_defaults_to_auto_and_resolves_to_a_copy(monkeypatch) -> None:
    fake_cpu(monkeypatch, AVX2_ONLY)
    config = load_config(None)
    assert config.precision == "auto"
    resolved, choice = with_resolved_precision(config, "cpu")
    assert resolved.precision == "32" == choice.precision
    assert config.precision == "auto"  # the caller's config is left as it was


@pytest.mark.parametrize(
    ("value", "want"), [("auto", "auto"), ("32", "32"), ("bf16-mixed", "bf16-mixed")]
)
def test_config_accepts_the_precisions(value, want) -> None:
    assert load_config(None, [f"precision={value}"]).precision == want


def test_config_reads_a_bare_32_as_text() -> None:
    assert load_config(None, ["precision=32"]).precision == "32"  # YAML's integer 32


@pytest.mark.parametrize("value", ["bf16", "fastest", "64"])
def test_config_refuses_other_precisions_naming_the_key(value) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"precision={value}"])
    message = str(err.value)
    assert "precision:" in message and "'auto'" in message and "\n" not in message


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_follows_the_hardware(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config) and config.precision == "auto"


# ----------------------------------------------------------------------------- users


def test_the_validation_checks_autocast_follows_the_decision(monkeypatch, tmp_path) -> None:
    from purrsight.validation.context import ValidationContext

    ctx = ValidationContext(None, [], tmp_path, device=torch.device("cpu"))
    ctx.config = load_config(None)  # precision: auto
    fake_cpu(monkeypatch, ZEN4)
    with ctx.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") is torch.bfloat16
    fake_cpu(monkeypatch, AVX2_ONLY)
    with ctx.autocast():
        assert not torch.is_autocast_enabled("cpu")
