"""The exported model folder (a *bundle*) and loading it back for inference.

A bundle is self-describing: ``purrsight.json`` names every model identity and setting
needed to rebuild the Phase 2 model, and the folder holds every trained weight::

    purrsight.json              format, labels, modalities, prompts, encoders, LLM, sizes,
                                inference settings (typed: :mod:`.bundle_manifest`)
    projectors.safetensors      one projector per modality ({modality}.net.*)
    aligner.pt, aligner.json    the frozen Phase 1 aligner (a copy)
    adapter_model.safetensors   the LoRA adapter in PEFT's own format      (llm.kind "adapter")
    adapter_config.json
    llm/                        the LLM with LoRA folded in, fp32           (llm.kind "merged")
    llm/ + llm_int8.pt          config + tokenizer + int8 state dict        (llm.kind "int8")

The frozen encoders and, for ``adapter`` bundles, the base LLM are referenced by identity
(the same hash the Phase 1 / Phase 2 runs recorded) and loaded from where the config says;
a different model there is refused with a one-line :class:`BundleError`.

Nothing here imports Lightning or MLflow.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from purrsight.inference.bundle_manifest import (
    ADAPTER_FILE,
    INT8_FILE,
    LLM_DIR,
    MANIFEST,
    BundleManifest,
    read_manifest,
)
from purrsight.inference.errors import BundleError
from purrsight.models.aligner import Aligner, load_aligner
from purrsight.models.mm_llm import MultimodalLLM, build_multimodal_llm
from purrsight.models.weights import WeightsError, load_weights

log = logging.getLogger(__name__)


@dataclass
class LoadedBundle:
    """A bundle's model, ready for inference (eval mode, on ``device``)."""

    path: Path
    manifest: BundleManifest
    """The validated ``purrsight.json``."""
    model: MultimodalLLM
    tokenizer: Any
    aligner: Aligner

    @property
    def info(self) -> dict[str, Any]:
        """``purrsight.json`` as plain JSON values."""
        return self.manifest.model_dump(mode="json")

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def modalities(self) -> list[str]:
        """The modalities the model has projectors for (``image``, ``audio``)."""
        return list(self.manifest.modalities)


# Linear layers left in fp32 by ``--quantize int8``, by name suffix. Measured on the demo
# model (SmolLM2-135M, label scoring on 6 test samples vs fp32): quantizing every layer
# agreed on 0 of 6 labels, leaving only ``down_proj`` in fp32 on 6 of 6 (largest
# probability change 0.16). The MLP's down projection reads the few huge activation
# channels small LLMs have, which one int8 scale per tensor cannot hold.
INT8_SKIP = ("down_proj",)


def quantize_int8(module: nn.Module, skip: tuple[str, ...] = INT8_SKIP) -> nn.Module:
    """Dynamic int8 quantization of the ``nn.Linear`` layers whose names do not end in
    ``skip`` (weights int8, activations quantized per batch at run time)."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    chosen = {
        name: default_dynamic_qconfig
        for name, layer in module.named_modules()
        if isinstance(layer, nn.Linear) and not name.endswith(tuple(skip))
    }
    with warnings.catch_warnings():
        # torch announces the move of eager quantization to torchao; the API still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", ".*quantized tensor creation functions.*")
        return quantize_dynamic(module, chosen, dtype=torch.qint8)


def state_dict_megabytes(module: nn.Module) -> float:
    """Serialized size of ``module``'s state dict in MB (10^6 bytes), as torch.save writes it."""
    import io

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


# ----------------------------------------------------------------------------- loading


def load_bundle(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype | None = None,
    use_ready: bool = True,
) -> LoadedBundle:
    """Rebuild the model a bundle describes. ``dtype``: the LLM's compute dtype (None:
    as stored, fp32; int8 bundles keep their own). A bundle with a ready LLM (its
    ``ready`` section, :mod:`.ready_llm`) maps it, unless ``use_ready`` is False;
    others load through transformers and PEFT.

    Raises:
        BundleError: the folder is no bundle, a file is missing, or a referenced model
            (base LLM, aligner) is not the one the bundle was made with.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = read_manifest(folder)
    aligner_path = folder / manifest.aligner.file
    if not aligner_path.is_file():
        raise BundleError(f"{aligner_path}: the bundle's aligner is missing")
    aligner, _ = load_aligner(aligner_path)
    aligner.eval()
    if use_ready and manifest.ready is not None and manifest.llm.kind != "int8":
        model = _load_ready(folder, manifest, dtype or torch.float32)
        model.to(device).eval()
        return LoadedBundle(folder, manifest, model, model.tokenizer, aligner.to(device))
    if manifest.llm.kind != "int8" and use_ready:
        log.info(
            "%s has no ready LLM (an older export): loading it takes seconds longer; "
            "`purrsight export --upgrade %s` adds one",
            folder,
            folder,
        )
    from transformers.utils import logging as hf_logging

    # "Loading weights" bars on stderr would garble `predict`'s one-line errors and logs.
    hf_logging.disable_progress_bar()
    llm, tokenizer = _load_llm(folder, manifest)
    lora = manifest.lora
    model = build_multimodal_llm(
        llm,
        tokenizer,
        in_dim=manifest.projectors.in_dim,
        num_tokens=manifest.num_soft_tokens,
        modalities=manifest.modalities,
        projector_hidden_dim=manifest.projectors.hidden_dim,
        lora_r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        lora_target_modules=list(lora.target_modules),
    )
    projectors_path = folder / manifest.projectors.file
    if not projectors_path.is_file():
        raise BundleError(f"{projectors_path}: the bundle's projectors are missing")
    _load_strict(model.projectors, load_file(str(projectors_path)), projectors_path)
    kind = manifest.llm.kind
    if kind == "adapter":
        _load_adapter(model, folder / ADAPTER_FILE)
        # Folded into the weights for inference: unmerged, every q/k/v/o projection runs
        # two more matmuls and a dropout per call, which made fp32 generation ~2.7x
        # slower than the (merged) int8 bundle and label scoring ~1.8x (predict_latency.py).
        model.merge_lora()
    else:
        # The LLM already holds the adapter; the fresh LoRA layers (B = 0) add nothing and
        # merging them away leaves the plain model.
        model.merge_lora()
        if kind == "int8":
            assert manifest.quantization is not None  # the manifest checks it for int8
            model.llm = quantize_int8(model.llm, tuple(manifest.quantization.skipped))
            int8_path = folder / INT8_FILE
            if not int8_path.is_file():
                raise BundleError(f"{int8_path}: the bundle's int8 weights are missing")
            with warnings.catch_warnings():
                # Packed int8 weights still go through TypedStorage inside torch.load.
                warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")
                try:
                    state = load_weights(int8_path, "int8 weights file")
                except WeightsError as err:
                    raise BundleError(str(err)) from None
            _load_strict(model.llm, state, int8_path)
    if dtype is not None and kind != "int8":
        model.llm.to(dtype)
    model.to(device).eval()
    return LoadedBundle(folder, manifest, model, tokenizer, aligner.to(device))


def _load_ready(folder: Path, manifest: BundleManifest, dtype: torch.dtype) -> MultimodalLLM:
    """The model around the bundle's ready LLM (mapped, LoRA already folded in)."""
    from safetensors.torch import load_file

    from purrsight.inference.ready_llm import ReadyMultimodalLLM, load_ready_llm
    from purrsight.models.projector import Projectors

    assert manifest.ready is not None
    llm, tokenizer = load_ready_llm(folder, manifest.ready, dtype)
    info = manifest.projectors
    projectors = Projectors(
        tuple(manifest.modalities),
        info.in_dim,
        llm.get_input_embeddings().embedding_dim,
        manifest.num_soft_tokens,
        info.hidden_dim,
    )
    projectors_path = folder / info.file
    if not projectors_path.is_file():
        raise BundleError(f"{projectors_path}: the bundle's projectors are missing")
    _load_strict(projectors, load_file(str(projectors_path)), projectors_path)
    projectors.requires_grad_(False)
    return ReadyMultimodalLLM(llm, projectors, tokenizer)


def _load_llm(folder: Path, manifest: BundleManifest):
    """(causal LM, tokenizer) for the bundle's ``llm.kind``."""
    from purrsight.models.llm import load_llm, resolve_llm_folder

    llm_info = manifest.llm
    kind = llm_info.kind
    if kind == "merged":
        return load_llm(str(folder / LLM_DIR))
    if kind == "int8":
        return _llm_skeleton(folder / LLM_DIR)
    try:
        base = resolve_llm_folder(llm_info.name)
    except (FileNotFoundError, ValueError) as err:
        raise BundleError(f"{folder / MANIFEST}: llm.name: {err}") from None
    identity = llm_identity(base)
    if identity != llm_info.identity:
        raise BundleError(
            f"{folder / MANIFEST}: the base LLM at {base} is not the one this bundle was "
            f"trained on (identity {identity}, the bundle needs {llm_info.identity})"
        )
    return load_llm(llm_info.name)


def _llm_skeleton(llm_dir: Path):
    """The LLM's architecture from its config (weights random; the int8 state dict
    replaces every one) and its tokenizer, both from the bundle."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (llm_dir / "config.json").is_file():
        raise BundleError(f"{llm_dir}: config.json missing")
    config = AutoConfig.from_pretrained(llm_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval(), tokenizer


def llm_identity(folder: Path) -> str:
    """The base LLM's identity: a hash over every file of its folder (as encoders use)."""
    from purrsight.models.encoders import folder_hash

    return f"llm:{folder_hash(folder)}"


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BundleError(
            f"{source}: weights do not fit the model: {len(result.missing_keys)} missing "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:2]})"
        )


def _load_adapter(model: MultimodalLLM, path: Path) -> None:
    """PEFT's adapter file into the model's LoRA layers, every tensor accounted for."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not path.is_file():
        raise BundleError(f"{path}: the bundle's LoRA adapter is missing")
    state = load_file(str(path))
    result = set_peft_model_state_dict(model.llm, state)
    expected = sum(1 for name, _ in model.llm.named_parameters() if ".lora_" in name)
    if result.unexpected_keys or len(state) != expected:
        raise BundleError(
            f"{path}: the adapter does not fit the LLM ({len(state)} tensors for {expected} "
            f"LoRA parameters; unexpected e.g. {list(result.unexpected_keys)[:2]})"
        )
