"""``purrsight export``: a Phase 2 training checkpoint → a self-describing bundle folder.

    purrsight export --checkpoint outputs/checkpoints/last.ckpt --out outputs/demo/bundle
    purrsight export --checkpoint … --out bundle-merged --merge-lora      # LoRA folded in
    purrsight export --checkpoint … --out bundle-int8 --quantize int8     # CPU int8 LLM

The checkpoint holds only projectors + LoRA; its ``hyper_parameters`` name the resolved
config, the aligner (path + sha256) and the LLM. The export rebuilds that model, checks the
aligner is unchanged, and writes the layout of :mod:`purrsight.inference.bundle`. The
folder is written beside ``out`` and renamed into place, so a failed export never leaves
half a bundle; an existing bundle at ``out`` is replaced, any other folder is refused.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from purrsight.config import Config, ConfigError
from purrsight.data.instruction import SYSTEM_PROMPT
from purrsight.hashing import file_sha256
from purrsight.inference.bundle import INT8_SKIP, llm_identity, quantize_int8, state_dict_megabytes
from purrsight.inference.bundle_manifest import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    ALIGNER_FILE,
    BUNDLE_FORMAT,
    INT8_FILE,
    LLM_DIR,
    MANIFEST,
    PROJECTORS_FILE,
    AlignerInfo,
    BundleManifest,
    EncoderInfo,
    GenerationInfo,
    LlmInfo,
    LoraInfo,
    ProjectorsInfo,
    PromptInfo,
    QuantizationInfo,
    SourceInfo,
    write_manifest,
)
from purrsight.inference.ready_llm import add_ready_to_export
from purrsight.models.mm_llm import MultimodalLLM
from purrsight.models.weights import read_phase2_checkpoint
from purrsight.vocabulary import MODALITIES, UNSURE, WELFARE_LABELS

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)


def model_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[MultimodalLLM, Any, Config]:
    """The trained Phase 2 model exactly as the checkpoint left it (eval mode, CPU)."""
    from purrsight.models.llm import load_llm
    from purrsight.models.mm_llm import multimodal_llm_from_config

    meta = checkpoint["hyper_parameters"]
    config = Config.model_validate(meta["config"])
    llm, tokenizer = load_llm(config.llm_model_name)
    model = multimodal_llm_from_config(
        config,
        llm,
        tokenizer,
        in_dim=int(meta["aligner"]["embed_dim"]),
        modalities=meta["modalities"],
    )
    prefix = "model."
    state = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items()}
    model.load_trainable_state_dict(state)
    return model.eval(), tokenizer, config


def export_bundle(
    checkpoint_path: str | Path,
    out: str | Path,
    *,
    merge_lora: bool = False,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Write the bundle for ``checkpoint_path`` to ``out``; returns its ``purrsight.json``.

    Args:
        merge_lora: save the LLM with LoRA folded into its weights (``llm/``) instead of
            the adapter: no base model needed at load, ~0.5 GB for SmolLM2-135M in fp32.
        quantize: ``"int8"``: LoRA folded in, then the LLM's ``nn.Linear`` layers (but
            ``INT8_SKIP``, see :mod:`~purrsight.inference.bundle`) dynamically quantized;
            ``llm_int8.pt`` holds the whole LLM's state dict.
    Raises:
        ConfigError: bad arguments, a missing or changed aligner, a non-bundle ``out``.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize: {quantize!r} is not one of {QUANTIZE_CHOICES}")
    out = Path(out)
    _check_target(out)
    checkpoint_path = Path(checkpoint_path)
    checkpoint = read_phase2_checkpoint(checkpoint_path)
    meta = checkpoint["hyper_parameters"]
    aligner_path = Path(meta["aligner"]["path"])
    if not aligner_path.is_file() or file_sha256(aligner_path) != meta["aligner"]["sha256"]:
        raise ConfigError(
            f"{checkpoint_path}: it was trained with the aligner {aligner_path} "
            f"(sha256 {meta['aligner']['sha256'][:12]}…), which is gone or changed"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in job logs
    model, tokenizer, config = model_from_checkpoint(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        manifest = _write(staging, model, tokenizer, config, meta, merge_lora, quantize)
        add_ready_to_export(staging, model, tokenizer, manifest)  # LoRA folded in after _write
        manifest.source = SourceInfo(
            checkpoint=str(checkpoint_path.resolve()),
            checkpoint_sha256=file_sha256(checkpoint_path),
            global_step=int(checkpoint.get("global_step", 0)),
            exported=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        write_manifest(staging, manifest)
        for path in staging.rglob("*"):  # safetensors writes 0600: a bundle is for sharing
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)  # _check_target made sure it is an earlier bundle
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("bundle written to %s (llm %s)", out, manifest.llm.kind)
    return manifest.model_dump(mode="json")


def _check_target(out: Path) -> None:
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())
    ):
        raise ConfigError(
            f"--out: {out} exists and is not a Purr-Sight bundle; choose another folder"
        )


def _write(
    folder: Path,
    model: MultimodalLLM,
    tokenizer: Any,
    config: Config,
    meta: dict[str, Any],
    merge_lora: bool,
    quantize: str | None,
) -> BundleManifest:
    """Write every weight file into ``folder``; returns the manifest (without ``source``)."""
    from safetensors.torch import save_file

    projectors = {k: v.contiguous() for k, v in model.projectors.state_dict().items()}
    save_file(projectors, str(folder / PROJECTORS_FILE), metadata={"format": BUNDLE_FORMAT})
    shutil.copy2(meta["aligner"]["path"], folder / ALIGNER_FILE)
    shutil.copy2(Path(meta["aligner"]["path"]).with_name("aligner.json"), folder / "aligner.json")
    from purrsight.models.llm import resolve_llm_folder

    base_folder = resolve_llm_folder(config.llm_model_name)
    sizes: dict[str, float] = {}
    if quantize is None and not merge_lora:
        kind = "adapter"
        # PEFT's own format: any PEFT tooling loads the adapter onto the same base LLM.
        model.llm.save_pretrained(str(folder), safe_serialization=True)
        (folder / "README.md").unlink(missing_ok=True)  # PEFT's empty model card template
        for name in (ADAPTER_FILE, ADAPTER_CONFIG):
            if not (folder / name).is_file():
                raise RuntimeError(f"PEFT did not write {name}")
    else:
        model.merge_lora()
        llm = model.base_llm()
        sizes["llm_fp32_mb"] = round(state_dict_megabytes(llm), 2)
        if quantize == "int8":
            kind = "int8"
            llm.config.save_pretrained(folder / LLM_DIR)
            quantized = quantize_int8(llm)
            torch.save(quantized.state_dict(), folder / INT8_FILE)
            sizes["llm_int8_mb"] = round((folder / INT8_FILE).stat().st_size / 1e6, 2)
        else:
            kind = "merged"
            llm.save_pretrained(folder / LLM_DIR, safe_serialization=True)
        tokenizer.save_pretrained(folder / LLM_DIR)
    sizes["bundle_mb"] = round(
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 2
    )
    aligner = meta["aligner"]
    return BundleManifest(
        format=BUNDLE_FORMAT,
        labels=list(config.labels),
        unsure_label=UNSURE,
        welfare_labels=sorted(WELFARE_LABELS),
        modalities=list(meta["modalities"]),
        num_soft_tokens=config.num_soft_tokens,
        projectors=ProjectorsInfo(
            file=PROJECTORS_FILE,
            in_dim=int(model.projectors.in_dim),
            llm_dim=int(model.projectors.llm_dim),
            hidden_dim=int(
                next(iter(model.projectors.values())).hidden_dim  # type: ignore[attr-defined]
            ),
        ),
        llm=LlmInfo(
            name=config.llm_model_name,
            identity=llm_identity(base_folder),
            model_type=model.base_llm().config.model_type,
            hidden_size=int(model.projectors.llm_dim),
            kind=kind,
        ),
        lora=LoraInfo(
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
            merged=kind != "adapter",
        ),
        quantization=(
            QuantizationInfo(
                method="torch dynamic int8 (nn.Linear)", skipped=list(INT8_SKIP), **sizes
            )
            if quantize
            else None
        ),
        sizes=sizes,
        aligner=AlignerInfo(
            file=ALIGNER_FILE,
            sha256=aligner["sha256"],
            embed_dim=int(aligner["embed_dim"]),
            run_name=aligner.get("run_name"),
        ),
        encoders={
            m: EncoderInfo(
                config=getattr(config.encoders, m).model_dump(),
                identity=aligner.get("encoders", {}).get(m),
            )
            for m in MODALITIES
        },
        prompt=PromptInfo(
            system_prompt=SYSTEM_PROMPT,
            instruction=config.inference.instruction,
            answer_fields=list(config.answer_fields),
        ),
        inference=config.inference,
        media=config.media,
        generation=GenerationInfo(max_new_tokens=config.max_new_tokens),
        max_text_length=config.max_text_length,
    )
