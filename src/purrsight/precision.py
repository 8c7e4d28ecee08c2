"""The one decision on training precision: the config's ``precision`` against the hardware.

``precision: auto`` (the default) trains in ``bf16-mixed`` only where the device computes
bf16 natively: a CUDA GPU with bf16 (Ampere and later), or a CPU with AVX512-BF16 or AMX
(Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere it trains
in ``32``: a CPU without those flags runs bf16 in torch's scalar fallback, measured
~10-100x slower than fp32 on an AVX2-only AMD EPYC. An explicit ``bf16-mixed`` is kept
(the user asked for it) with one warning that it will be slow; ``16-mixed`` needs CUDA.

Everything that picks a dtype (the Lightning Trainer, the frozen linears held in the
autocast dtype, the validation checks' autocast, the throughput benchmark) goes through
:func:`resolve_precision`, and the resolved value, never "auto", is what a run records.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from purrsight.config import ConfigError

if TYPE_CHECKING:
    from purrsight.config import Config

log = logging.getLogger(__name__)

Precision = Literal["32", "bf16-mixed", "16-mixed"]
"""A resolved precision, as Lightning names it."""

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU features that give native bf16 matmuls (oneDNN uses either)."""

# Explicit bf16 on slow hardware is warned about once per process, however many callers
# (run_phase2, its plan_run, the validation checks) resolve the same setting.
_WARNED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run trains in and why."""

    precision: Precision
    reason: str
    """Why, naming what was found (e.g. "auto: CPU has avx512_bf16")."""
    autocast_dtype: torch.dtype | None
    """The autocast dtype (None for "32": no autocast)."""


def _choice(precision: Precision, reason: str) -> PrecisionChoice:
    return PrecisionChoice(precision, reason, AUTOCAST_DTYPES.get(precision))


# ----------------------------------------------------------------------------- detection


def cpu_capabilities() -> dict[str, Any]:
    """torch's view of the CPU features (cpuinfo); where this torch cannot give the whole
    map, the bf16 flags from its older per-flag probes (unknown counts as no)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return dict(get())
        except (RuntimeError, AttributeError):  # a torch built without cpuinfo
            pass
    return _probed_bf16_flags()


# Older torch (before get_capabilities) names AMX by its tile flag only; every AMX CPU so
# far has amx_bf16 with it.
_PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}


def _probed_bf16_flags() -> dict[str, bool]:
    """The bf16 flags from ``torch.cpu`` / ``torch._C._cpu`` probes, False where absent."""
    flags = {}
    for flag, name in _PROBES.items():
        probe = getattr(torch.cpu, name, None) or getattr(
            getattr(torch._C, "_cpu", None), name, None
        )
        try:
            flags[flag] = bool(probe()) if probe is not None else False
        except (RuntimeError, AttributeError, NameError):
            flags[flag] = False
    return flags


def cpu_bf16_flags(caps: Mapping[str, Any] | None = None) -> dict[str, bool]:
    """``{"avx512_bf16": bool, "amx_bf16": bool}`` for this CPU (unknown counts as no)."""
    caps = cpu_capabilities() if caps is None else caps
    return {flag: bool(caps.get(flag, False)) for flag in CPU_BF16_FLAGS}


def cpu_has_native_bf16() -> bool:
    """True where the CPU does bf16 matmuls natively (AVX512-BF16 or AMX-BF16) and torch
    may use it (not capped below AVX-512, see :func:`bf16_capped_by`)."""
    return any(cpu_bf16_flags().values()) and bf16_capped_by() is None


# ATen levels below AVX-512: where torch is held at one (ATEN_CPU_CAPABILITY=avx2, with
# ONEDNN_MAX_CPU_ISA / MKL_ENABLE_INSTRUCTIONS to match), bf16 matmuls take the slow path
# even on a CPU that has avx512_bf16.
_BELOW_AVX512 = ("DEFAULT", "AVX2")


def bf16_capped_by() -> str | None:
    """The ATen capability that keeps torch from the CPU's bf16 instructions, else None."""
    capability = aten_cpu_capability()
    return capability if capability in _BELOW_AVX512 else None


def cuda_has_native_bf16() -> bool:
    """True where a CUDA GPU is present and computes bf16 natively (not emulated)."""
    if not torch.cuda.is_available():
        return False
    try:
        # Newer torch counts emulated bf16 (pre-Ampere GPUs) unless told not to.
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no emulation argument, native only
        return bool(torch.cuda.is_bf16_supported())


def aten_cpu_capability() -> str:
    """The vector level ATen dispatches to ("AVX512", "AVX2", "DEFAULT", …), or "unknown"."""
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    try:
        return str(get()) if get is not None else "unknown"
    except RuntimeError:
        return "unknown"


def cpu_features_summary() -> str:
    """One line for people: e.g. "avx512_bf16 yes, amx_bf16 no, capability AVX512"."""
    flags = cpu_bf16_flags()
    found = ", ".join(f"{flag} {'yes' if flags[flag] else 'no'}" for flag in CPU_BF16_FLAGS)
    return f"{found}, capability {aten_cpu_capability()}"


def inference_dtype(requested: str, device_type: str) -> torch.dtype:
    """The dtype a predictor's LLM computes in: ``auto`` gives bf16 where the device does
    bf16 natively (as training's ``auto``), fp32 elsewhere; ``32`` always fp32. Measured
    on an AVX512-BF16 EPYC with the demo bundle: label scoring 180 → 91 ms, a report
    2.8 → 1.7 s, the same answer text; on CPUs without native bf16 it would be the slow
    scalar path, so they keep fp32."""
    if requested not in ("auto", "32"):
        raise ValueError(f"inference precision must be 'auto' or '32', got {requested!r}")
    native = cuda_has_native_bf16() if device_type == "cuda" else cpu_has_native_bf16()
    if device_type not in ("cpu", "cuda"):
        native = False
    return torch.bfloat16 if requested == "auto" and native else torch.float32


def encoder_dtype(precision: str, device_type: str = "cpu") -> torch.dtype:
    """What the frozen encoders compute in on ``device_type`` (a source without a device
    runs them on the CPU) for a config's ``precision``: ``auto`` gives bf16 where that
    device does bf16 natively (the one decision of :mod:`purrsight.precision`), an
    explicit ``bf16-mixed`` bf16, anything else float32 (``16-mixed`` is for CUDA's LLM)."""
    if precision == "auto":
        return inference_dtype("auto", device_type)
    return torch.bfloat16 if precision == "bf16-mixed" else torch.float32


def predict_precision(config_precision: str) -> str:
    """The ``Predictor.from_bundle`` precision of a job whose config says
    ``config_precision`` (export's reading heads, the demo's evaluation): ``32`` where
    that resolves to fp32 here (an explicit ``32``, or ``auto`` without native bf16), so a
    run forced to fp32 is fp32 throughout; else ``auto``."""
    resolved = resolve_precision(config_precision, training_device_type()).precision
    return "32" if resolved == "32" else "auto"


def training_device_type() -> str:
    """The device type Lightning's ``accelerator="auto"`` trains on here."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


# ----------------------------------------------------------------------------- the decision


def require_possible(precision: str, device_type: str) -> None:
    """Raise :class:`ConfigError` naming the key where ``precision`` cannot run at all."""
    if precision == "16-mixed" and device_type != "cuda":
        raise ConfigError(
            "precision: '16-mixed' needs a CUDA GPU; use 'auto', 'bf16-mixed' or '32' "
            "on this machine"
        )


def resolve_precision(requested: str, device_type: str) -> PrecisionChoice:
    """The precision to train in for the config's ``requested`` on ``device_type``.

    Raises:
        ConfigError: ``16-mixed`` without CUDA, or a value that is no precision.
    """
    require_possible(requested, device_type)
    if requested == "auto":
        return _auto(device_type)
    if requested == "bf16-mixed":
        _warn_if_slow_bf16(device_type)
        return _choice("bf16-mixed", "requested in the config")
    if requested in ("32", "16-mixed"):
        return _choice(requested, "requested in the config")
    raise ConfigError(
        f"precision: {requested!r} is not one of 'auto', '32', 'bf16-mixed', '16-mixed'"
    )


def _auto(device_type: str) -> PrecisionChoice:
    """bf16-mixed where the device does bf16 natively, 32 elsewhere."""
    if device_type == "cuda":
        if cuda_has_native_bf16():
            return _choice("bf16-mixed", "auto: the CUDA GPU has native bf16")
        return _choice("32", "auto: the CUDA GPU has no native bf16")
    if device_type == "cpu":
        found = [flag for flag, present in cpu_bf16_flags().items() if present]
        capped = bf16_capped_by()
        if found and capped:
            return _choice(
                "32",
                f"auto: CPU has {' and '.join(found)}, but torch runs at capability "
                f"{capped} (ATEN_CPU_CAPABILITY), where bf16 is the slow path",
            )
        if found:
            return _choice("bf16-mixed", f"auto: CPU has {' and '.join(found)}")
        return _choice(
            "32", "auto: CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated, slow)"
        )
    return _choice("32", f"auto: no native bf16 check for {device_type}")


def _warn_if_slow_bf16(device_type: str) -> None:
    """One warning per process when an explicit bf16-mixed will run emulated."""
    if device_type == "cpu" and not cpu_has_native_bf16():
        capped = bf16_capped_by() if any(cpu_bf16_flags().values()) else None
        where = (
            f"with torch at capability {capped}"
            if capped
            else "on a CPU without avx512_bf16 / amx_bf16"
        )
        hint = (
            f"precision: 'bf16-mixed' {where}: bf16 runs in torch's "
            "scalar fallback, ~10-100x slower than fp32; use precision: auto or '32'"
        )
    elif device_type == "cuda" and not cuda_has_native_bf16():
        hint = (
            "precision: 'bf16-mixed' on a CUDA GPU without native bf16: it is emulated "
            "and slow; use precision: auto, '16-mixed' or '32'"
        )
    else:
        return
    if ("bf16-mixed", device_type) not in _WARNED:
        _WARNED.add(("bf16-mixed", device_type))
        log.warning(hint)


def with_resolved_precision(
    config: Config, device_type: str | None = None
) -> tuple[Config, PrecisionChoice]:
    """``config`` with ``precision`` resolved for ``device_type`` (default: the device
    training uses here), so what it logs and checkpoints is what ran; and the choice."""
    choice = resolve_precision(config.precision, device_type or training_device_type())
    return config.model_copy(update={"precision": choice.precision}), choice
