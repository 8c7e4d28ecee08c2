"""A bundle's LLM kept ready to map: what makes ``purrsight predict`` start in seconds.

``purrsight export`` writes, beside the adapter (or the merged LLM), the LLM with LoRA
folded in, in :class:`~purrsight.models.lite_llm.LiteDecoder`'s layout, once per compute
dtype, and the tokenizer's ``tokenizer.json``::

    ready/
      llm.bf16.safetensors    the compute dtype where the CPU/GPU does bf16 natively
      llm.fp32.safetensors    ``precision 32`` and CPUs without native bf16
      tokenizer.json

and ``purrsight.json``'s ``ready`` section (:class:`~.bundle_manifest.ReadyLlmInfo`):
the architecture, the tokenizer's special tokens and its chat template cut in two pieces
around the user's text. Loading maps the file of the compute dtype (nothing converted,
no transformers, no PEFT; several processes share the pages) and builds the
:class:`~purrsight.models.mm_llm.MultimodalLLM` around it without LoRA layers.

Before keeping the files the export checks them: the ready model's logits against the
transformers model's (fp32, padded batch), and the ready tokenizer's ids, decoded text
and rendered prompts against the transformers tokenizer's. A model or tokenizer this
cannot reproduce (another architecture, a template that rewrites the user's text) gets no
``ready`` section, with a warning: that bundle loads the slower way, as bundles of older
exports do (``purrsight export --upgrade BUNDLE`` adds the section to one of those).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from purrsight.inference.bundle_manifest import READY_DIR, BundleManifest, ReadyLlmInfo
from purrsight.inference.errors import BundleError
from purrsight.models.lite_llm import (
    LiteConfig,
    LiteDecoder,
    UnsupportedModel,
    lite_state_dict,
    load_lite_weights,
    save_lite_weights,
)
from purrsight.models.lite_tokenizer import LiteTokenizer, tokenizer_spec
from purrsight.models.mm_llm import MultimodalLLM
from purrsight.models.projector import Projectors

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
FILES = {"bfloat16": "llm.bf16.safetensors", "float32": "llm.fp32.safetensors"}
TOKENIZER_FILE = "tokenizer.json"
# What the export compares between the transformers tokenizer and the ready one.
PROBE_TEXTS = (
    '{"emotion":"content","arousal":"low","evidence":{"ears":"forward"}}',
    "How does this cat feel?\nOwner's note: she hides under the bed since Monday!",
    "Mia (3 ans) ne mange plus, elle miaule la nuit \u2014 \U0001f63f  ?",
    "  spaces,\ttabs\nand newlines  ",
)


class ReadyMultimodalLLM(MultimodalLLM):
    """The Phase 2 model around an LLM whose LoRA is already folded in: the projectors,
    the embedding splice and the generation of :class:`MultimodalLLM`, without the PEFT
    wrapping its constructor does for training (nothing trains here)."""

    def __init__(self, llm: nn.Module, projectors: Projectors, tokenizer: Any) -> None:
        nn.Module.__init__(self)
        self.llm = llm
        self.projectors = projectors
        self.tokenizer = tokenizer

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        features: dict[str, torch.Tensor] | None = None,
        present: dict[str, torch.Tensor] | None = None,
        placeholder_positions: dict[str, torch.Tensor] | None = None,
        position_ids: torch.Tensor | None = None,
        sample_rows: torch.Tensor | None = None,
    ) -> Any:
        """Full logits ``[b, s, v]`` for a padded batch, and with ``labels`` the mean
        next-token cross-entropy over the labelled tokens (as ``MultimodalLLM.forward``
        computes it for training, without its memory savings: this model is for
        inference). Packed batches are training's and are refused."""
        if sample_rows is not None:
            raise ValueError("the ready LLM takes padded batches, not packed ones")
        from types import SimpleNamespace

        from purrsight.models.mm_llm import position_ids_from_mask

        embeds = self.embed(input_ids, features or {}, present or {}, placeholder_positions or {})
        positions = (
            position_ids if position_ids is not None else position_ids_from_mask(attention_mask)
        )
        logits = self.llm(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions
        ).logits
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return SimpleNamespace(loss=loss, logits=logits)


# ----------------------------------------------------------------------------- export


def write_ready_llm(
    folder: Path, llm: nn.Module, tokenizer: Any, system_prompt: str
) -> ReadyLlmInfo | None:
    """Write ``folder/ready/`` for the merged transformers ``llm`` (LoRA folded in) and its
    ``tokenizer``; None, with a warning and nothing left behind, when the ready model or
    tokenizer would not give the same results (see the module docstring)."""
    target = folder / READY_DIR
    try:
        config = LiteConfig.from_hf(llm.config, _eos_ids(llm))
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise UnsupportedModel("the tokenizer is not a fast (tokenizers) one")
        spec = tokenizer_spec(tokenizer, system_prompt)
        target.mkdir(parents=True, exist_ok=True)
        backend.save(str(target / TOKENIZER_FILE))
        state = lite_state_dict(llm, config)
        for name, dtype in DTYPES.items():
            save_lite_weights(target / FILES[name], state, dtype)
        _check_model(llm, load_lite_weights(config, target / FILES["float32"]))
        _check_tokenizer(tokenizer, LiteTokenizer(target / TOKENIZER_FILE, spec), system_prompt)
    except (UnsupportedModel, ValueError) as err:
        shutil.rmtree(target, ignore_errors=True)
        log.warning("no ready LLM in the bundle (it will load more slowly): %s", err)
        return None
    return ReadyLlmInfo(
        dir=READY_DIR,
        files=dict(FILES),
        tokenizer_file=TOKENIZER_FILE,
        config=config.to_dict(),
        tokenizer=spec,
    )


def _eos_ids(llm: nn.Module) -> list[int]:
    eos = getattr(getattr(llm, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]


@torch.no_grad()
def _check_model(llm: nn.Module, ready: LiteDecoder) -> None:
    """The ready model's logits equal the transformers model's on a left-padded batch."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ready.lite_config.vocab_size, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    was_training = llm.training
    llm.eval()
    try:
        expected = llm(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    finally:
        llm.train(was_training)
    got = ready(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    real = mask.bool()
    diff = float((expected - got)[real].abs().max())
    scale = float(expected[real].abs().max())
    if not diff <= 1e-4 * max(1.0, scale):
        raise ValueError(f"the ready LLM's logits differ from transformers' by {diff:.2e}")


def _check_tokenizer(hf: Any, ready: LiteTokenizer, system_prompt: str) -> None:
    """Same ids, decoded text, end/pad ids and prompts as the transformers tokenizer."""
    texts = [*PROBE_TEXTS, ready.chat["before"] + PROBE_TEXTS[1] + ready.chat["after"]]
    for text in texts:
        want = list(hf(text, add_special_tokens=False)["input_ids"])
        if ready(text, add_special_tokens=False)["input_ids"] != want:
            raise ValueError(f"the ready tokenizer splits {text[:30]!r} differently")
        for skip in (True, False):
            if ready.decode(want, skip_special_tokens=skip) != hf.decode(
                want, skip_special_tokens=skip
            ):
                raise ValueError(f"the ready tokenizer decodes {text[:30]!r} differently")
    if (ready.eos_token_id, ready.pad_token_id) != (hf.eos_token_id, hf.pad_token_id):
        raise ValueError("the ready tokenizer's end or pad id differs")


def add_ready_to_export(
    folder: Path, model: MultimodalLLM, tokenizer: Any, manifest: BundleManifest
) -> None:
    """The export's step after its own files: fold LoRA in (the adapter files are already
    written), write ``ready/`` and record it in ``manifest`` (``ready`` and the bundle's
    size). An int8 bundle keeps its own LLM and gets none."""
    if manifest.llm.kind == "int8":
        return
    model.merge_lora()
    manifest.ready = write_ready_llm(
        folder, model.base_llm(), tokenizer, manifest.prompt.system_prompt
    )
    manifest.sizes = {**manifest.sizes, "bundle_mb": bundle_megabytes(folder)}


def add_ready_llm(bundle_folder: str | Path) -> ReadyLlmInfo | None:
    """Give a bundle of an older export its ``ready`` section in place (``purrsight export
    --upgrade``): load it the slow way, write ``ready/``, rewrite ``purrsight.json``.
    Returns the new section (None: the model cannot be made ready; nothing changed)."""
    from purrsight.inference.bundle import load_bundle
    from purrsight.inference.bundle_manifest import write_manifest

    folder = Path(bundle_folder)
    bundle = load_bundle(folder, "cpu", dtype=torch.float32, use_ready=False)
    manifest = bundle.manifest
    if manifest.llm.kind == "int8":
        raise BundleError(f"{folder}: an int8 bundle keeps its own LLM; nothing to upgrade")
    ready = write_ready_llm(
        folder, bundle.model.base_llm(), bundle.tokenizer, manifest.prompt.system_prompt
    )
    if ready is None:
        return None
    manifest.ready = ready
    manifest.sizes = {**manifest.sizes, "bundle_mb": bundle_megabytes(folder)}
    write_manifest(folder, manifest)
    for path in (folder / READY_DIR).rglob("*"):
        path.chmod(0o644)
    return ready


def bundle_megabytes(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 2)


# ----------------------------------------------------------------------------- loading


def load_ready_llm(
    folder: Path, info: ReadyLlmInfo, dtype: torch.dtype
) -> tuple[LiteDecoder, LiteTokenizer]:
    """(the ready LLM mapped in ``dtype``, its tokenizer). A dtype the bundle has no file
    for is converted from another (once, at load; logged).

    Raises:
        BundleError: a file is missing or does not fit the recorded architecture.
    """
    root = folder / info.dir
    name = next((n for n, d in DTYPES.items() if d == dtype), None)
    chosen = name if name in info.files else next(iter(info.files))
    path = root / info.files[chosen]  # type: ignore[index]
    tokenizer_path = root / info.tokenizer_file
    for needed in (path, tokenizer_path):
        if not needed.is_file():
            raise BundleError(
                f"{needed}: the bundle's ready LLM is incomplete; export the bundle again"
            )
    try:
        model = load_lite_weights(LiteConfig.from_dict(info.config), path)
        tokenizer = LiteTokenizer(tokenizer_path, info.tokenizer)
    except (ValueError, KeyError, OSError) as err:
        raise BundleError(f"{root}: {err}; export the bundle again") from None
    if DTYPES[chosen] != dtype:
        log.info("the bundle has no %s LLM: converting its %s one at load", dtype, chosen)
        model.to(dtype)
    return model, tokenizer
