"""Phase 2 model: per-modality projectors + a causal LLM fine-tuned with LoRA.

The prompt's soft-token slots (see :mod:`purrsight.data.instruction`) are filled with the
projectors' outputs: token embeddings come from the LLM's own input embedding layer, the
``k`` soft tokens of each present modality overwrite the rows at that modality's slot
positions, and the LLM runs on ``inputs_embeds``. Only the projectors and the LoRA
matrices train; every base-LLM weight is frozen, so a checkpoint holds
:meth:`MultimodalLLM.trainable_state_dict` (megabytes), never the LLM.

Shapes: b = batch, s = sequence length, k = soft tokens per modality, d = LLM hidden
size, e = aligned feature size, n = generated tokens, v = vocabulary size.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from purrsight.models.lean_dropout import use_lean_lora_dropout
from purrsight.models.modes import eval_mode
from purrsight.models.projector import Projectors
from purrsight.models.weight_spill import spill_path
from purrsight.models.weights import load_weights
from purrsight.vocabulary import MODALITIES

DEFAULT_TARGET_MODULES = ("q_proj", "v_proj", "k_proj", "o_proj")


class TokenConstraint(Protocol):
    """What :meth:`MultimodalLLM.generate_ids` asks at each step of a constrained decoding
    (e.g. :class:`purrsight.inference.grammar.GrammarConstraint`)."""

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """[b, v] next-token logits → [b] the best token each row is allowed."""

    def advance(self, tokens: torch.Tensor) -> None:
        """[b] the tokens chosen (a finished row repeats its stop token)."""


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[b, s] 0/1 mask → [b, s] positions counting only real tokens (0 on left padding).

    Passed explicitly because HF decoders otherwise number positions by column, which
    shifts every left-padded prompt's rotary positions in a batch."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row of a [b, s] 0/1 mask is its real tokens first, then padding."""
    lengths = attention_mask.sum(-1, keepdim=True)  # [b, 1]
    columns = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return bool(torch.equal(attention_mask.bool(), columns < lengths))


def _is_trainable_name(name: str) -> bool:
    """Projector weights and LoRA matrices: exactly what a checkpoint holds."""
    return name.startswith("projectors.") or ".lora_" in name


def _has_logit_transform(config: Any) -> bool:
    """Models whose logits are more than ``lm_head(hidden)`` (Gemma 2's soft-capping,
    Cohere's and Granite's scaling): they keep the plain, full-logits loss."""
    names = ("final_logit_softcapping", "logit_scale", "logits_scaling")
    return any(getattr(config, name, None) not in (None, 1.0) for name in names)


class MultimodalLLM(nn.Module):
    """Projectors (trainable) + a PEFT-LoRA-wrapped causal LM (base weights frozen).

    Args:
        llm: a Hugging Face causal LM (modified in place: LoRA layers are injected).
        projectors: one projector per modality; ``llm_dim`` must equal the LLM's hidden size.
        tokenizer: the LLM's tokenizer; needed by :meth:`generate` to decode text.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA settings.
        gradient_checkpointing: recompute LLM activations in backward (less memory).
    """

    def __init__(
        self,
        llm: nn.Module,
        projectors: Projectors,
        tokenizer: Any = None,
        *,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.1,
        lora_target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        hidden = llm.get_input_embeddings().embedding_dim
        if projectors.llm_dim != hidden:
            raise ValueError(
                f"projectors emit {projectors.llm_dim}-d tokens but the LLM's hidden size is {hidden}"
            )
        for param in llm.parameters():
            param.requires_grad_(False)
        lora = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=list(lora_target_modules),
            task_type="CAUSAL_LM",
        )
        try:
            with warnings.catch_warnings():
                # PEFT 0.21 reads transformers' deprecated `is_gradient_checkpointing`;
                # the FutureWarning is theirs to fix and says nothing to our users.
                warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
                self.llm = get_peft_model(llm, lora)
        except ValueError as err:  # PEFT's message for target modules the model lacks
            raise ValueError(f"lora_target_modules={list(lora_target_modules)}: {err}") from None
        # A bool mask per LoRA dropout instead of a float one: a quarter less saved for
        # backward on CPU (see purrsight.models.lean_dropout).
        use_lean_lora_dropout(self.llm)
        self.projectors = projectors
        self.tokenizer = tokenizer
        self._check_trainable_split()
        if gradient_checkpointing:
            self.enable_gradient_checkpointing()

    # ------------------------------------------------------------------ properties

    @property
    def num_tokens(self) -> int:
        return self.projectors.num_tokens

    @property
    def modalities(self) -> list[str]:
        return self.projectors.modalities

    def _check_trainable_split(self) -> None:
        # The checkpoint format relies on the name rule matching what actually trains.
        by_flag = {n for n, p in self.named_parameters() if p.requires_grad}
        by_name = {n for n, _ in self.named_parameters() if _is_trainable_name(n)}
        if by_flag != by_name:
            odd = sorted(by_flag ^ by_name)[:5]
            raise RuntimeError(f"trainable parameters do not match the naming rule: {odd}")

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the LLM's layers (only active in train mode).

        Non-reentrant checkpointing keeps gradients flowing to LoRA even when nothing
        entering a checkpointed layer requires grad (a frozen embedding output, e.g. a
        prompt with no soft tokens), where the reentrant variant silently drops them;
        transformers also hooks the embedding output to require grad, as a second guard."""
        base = self.llm.get_base_model()
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        base.config.use_cache = False  # caching is pointless while recomputing

    @contextlib.contextmanager
    def frozen_linears_as(
        self, dtype: torch.dtype | None, spill_dir: Path | None = None
    ) -> Iterator[int]:
        """Inside the block, the frozen base LLM's ``nn.Linear`` weights are held in
        ``dtype``; afterwards the original tensors are put back, bit for bit.

        For autocast training: autocast casts a weight that does not require grad to
        bf16 again at every use (and keeps the copy for backward), ~15 % of a CPU step
        (~25 % with gradient checkpointing, which recasts in the recomputation). Under
        autocast the results are identical, since autocast would feed the matmul the
        same bf16 values. Embeddings, norms, the LM head (tied to the embeddings in
        SmolLM2 and Qwen2.5) and biases keep their dtype, so the residual stream does
        too. Outside autocast the block would fail on dtype mismatches: use it only
        around autocast work. ``dtype`` None: a no-op. Yields how many were converted.

        ``spill_dir``: the originals wait in a file there instead of in memory (read back
        and the file removed on exit), so the block costs no memory: the bf16 copies
        replace the fp32 weights instead of sitting beside them.
        """
        if dtype is None:
            yield 0
            return
        keep = {id(self.llm.get_input_embeddings().weight)}
        head = self.llm.get_output_embeddings()
        if head is not None:
            keep.add(id(head.weight))
        modules = [
            module
            for module in self.llm.modules()
            if isinstance(module, nn.Linear)
            and not module.weight.requires_grad
            and module.weight.dtype != dtype
            and id(module.weight) not in keep
        ]
        originals = [module.weight.data for module in modules]
        devices = [data.device for data in originals]
        spill = None
        if spill_dir is not None:
            spill = spill_path(spill_dir)
            spill.parent.mkdir(parents=True, exist_ok=True)
            torch.save(originals, spill)
            originals = []
        for module in modules:
            module.weight.data = module.weight.data.to(dtype)
        try:
            yield len(modules)
        finally:
            if spill is not None:
                saved = load_weights(spill, "spilled frozen weights")
                originals = [data.to(device) for data, device in zip(saved, devices, strict=True)]
                spill.unlink()
            for module, data in zip(modules, originals, strict=True):
                module.weight.data = data

    # ------------------------------------------------------------------ forward

    def embed(
        self,
        input_ids: torch.Tensor,
        features: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        placeholder_positions: dict[str, torch.Tensor],
        sample_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with soft tokens spliced in.

        Args:
            input_ids: [r, s] (r = n samples, or fewer rows when packed).
            features: {modality: [n, e]} aligned features (any value on absent samples).
            present: {modality: [n] bool}.
            placeholder_positions: {modality: [n, k] long} slot positions within the
                sample's row.
            sample_rows: [n] long, the row of each sample (None: sample i is row i).
        Returns:
            [r, s, d]: sample ``i``'s positions ``placeholder_positions[m][i]`` in its row
            hold ``projectors[m](features[m][i])`` for every ``m`` present in sample ``i``.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        for modality, feats in features.items():
            if modality not in self.projectors:
                raise KeyError(f"no projector for modality {modality!r}; have {self.modalities}")
            samples = present[modality].nonzero(as_tuple=True)[0]  # [m]
            if samples.numel() == 0:
                continue
            proj = self.projectors[modality]
            weight = proj.net[0].weight
            soft = proj(feats[samples].to(device=weight.device, dtype=weight.dtype))  # [m, k, d]
            positions = placeholder_positions[modality][samples].to(embeds.device)  # [m, k]
            if positions.shape != soft.shape[:2]:
                raise ValueError(
                    f"{modality}: {positions.shape[1]} slots per row but the projector emits "
                    f"{soft.shape[1]} tokens"
                )
            rows = samples if sample_rows is None else sample_rows.to(samples.device)[samples]
            row_index = rows.to(embeds.device)[:, None].expand_as(positions)
            # Out of place: the embedding output is shared with nothing, but an in-place
            # write into a tensor autograd saved would break backward.
            embeds = embeds.index_put((row_index, positions), soft.to(embeds.dtype))
        return embeds

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
        """Run the LLM on the spliced embeddings.

        Args:
            input_ids, attention_mask: [b, s].
            position_ids, sample_rows: a packed batch's [b, s] positions (restarting at
                every sample) and [n] rows (:mod:`purrsight.data.packing`); the decoder
                then gets no ``attention_mask`` and builds its block-diagonal causal mask
                from the restarts (a sample's padding tail is after it, so causality
                already hides it). A right-padded batch with ``labels`` runs without a mask
                too, for the same reason (SDPA's causal kernel, no mask built).
            labels: [b, s], ``-100`` where nothing is learned; given → ``.loss`` is the
                mean next-token cross-entropy over the labelled tokens, computed at those
                positions only and in chunks (:mod:`purrsight.models.lm_loss`), and
                ``.logits`` is ``None``: the full [b, s, v] logits are never built.
            features, present, placeholder_positions: as in :meth:`embed`.
        Returns:
            without ``labels``: the LLM's output, ``.logits`` [b, s, v];
            with ``labels``: ``.loss`` (scalar fp32) and ``.logits`` ``None``.
        """
        embeds = self.embed(
            input_ids, features or {}, present or {}, placeholder_positions or {}, sample_rows
        )
        if position_ids is not None:  # packed
            mask, positions = None, position_ids
        elif labels is not None and is_right_padded(attention_mask):
            # Causality alone keeps every real token off the padding after it: no mask,
            # so SDPA runs its causal kernel (skips the upper triangle, builds no mask).
            # The loss never reads the padding's outputs; returned logits would.
            mask, positions = None, None
        else:
            mask, positions = attention_mask, position_ids_from_mask(attention_mask)
        inputs = {
            "inputs_embeds": embeds,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": False,
        }
        base = self.base_llm()
        if labels is None or _has_logit_transform(base.config):
            return self.llm(**inputs, labels=labels)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        from purrsight.models.lm_loss import lm_loss

        # The decoder stack (LoRA layers included) without the head: hidden [b, s, d].
        hidden = getattr(base, base.base_model_prefix)(**inputs).last_hidden_state
        loss = lm_loss(hidden, labels, base.get_output_embeddings())
        return CausalLMOutputWithPast(loss=loss, logits=None)

    # ------------------------------------------------------------------ generation

    def stop_token_ids(self) -> set[int]:
        """The tokenizer's end-of-turn token plus the LLM's generation-config eos ids."""
        ids: set[int] = set()
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        config_eos = getattr(getattr(self.llm, "generation_config", None), "eos_token_id", None)
        if config_eos is not None:
            ids.update([config_eos] if isinstance(config_eos, int) else config_eos)
        return ids

    @torch.no_grad()
    def generate_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        present: dict[str, torch.Tensor] | None = None,
        placeholder_positions: dict[str, torch.Tensor] | None = None,
        max_new_tokens: int = 256,
        stop_ids: set[int] | None = None,
        labels: torch.Tensor | None = None,
        constraint: TokenConstraint | None = None,
    ) -> torch.Tensor:
        """Greedy decoding with a KV cache for a left-padded batch of prompts.

        Args:
            input_ids, attention_mask: [b, s] prompts, left-padded (every row's last
                column is a real token: ``collate(..., padding_side="left")``).
            features, present, placeholder_positions: as in :meth:`embed`.
            max_new_tokens: upper bound on n.
            stop_ids: tokens that end a row (default :meth:`stop_token_ids`).
            labels: ignored (accepted so a collated batch's inputs can be passed whole).
            constraint: when given, each step takes the best token it allows (its
                ``pick``) and tells it the tokens taken (``advance``).
        Returns:
            [b, n] long: generated ids; a row's stop token is included, and after it the
            row repeats that token (as padding).
        """
        del labels
        if not bool(attention_mask[:, -1].all()):
            raise ValueError("generate needs left-padded prompts (collate(padding_side='left'))")
        stop = stop_ids if stop_ids is not None else self.stop_token_ids()
        if not stop:
            raise ValueError("no stop token: give the model a tokenizer or pass stop_ids")
        stop_tensor = torch.tensor(sorted(stop), device=input_ids.device)
        with eval_mode(self):
            embeds = self.embed(
                input_ids, features or {}, present or {}, placeholder_positions or {}
            )
            mask = attention_mask.long()
            positions = position_ids_from_mask(mask)
            out = self.llm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,  # the prompt's other logits are never used: [b, 1, v]
            )
            next_position = positions[:, -1:] + 1  # [b, 1]
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            generated: list[torch.Tensor] = []
            for _ in range(max_new_tokens):
                logits = out.logits[:, -1]  # [b, v]
                token = logits.argmax(-1) if constraint is None else constraint.pick(logits)
                if generated:  # a finished row repeats its stop token (a valid id) as padding
                    token = torch.where(done, generated[-1], token)
                if constraint is not None:
                    constraint.advance(token)
                generated.append(token)
                done |= torch.isin(token, stop_tensor)
                if bool(done.all()):
                    break
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                out = self.llm(
                    input_ids=token[:, None],
                    attention_mask=mask,
                    position_ids=next_position,
                    use_cache=True,
                    **self._cache_kwargs(out),
                )
                next_position = next_position + 1
        if not generated:
            return input_ids.new_zeros(input_ids.shape[0], 0)
        return torch.stack(generated, dim=1)

    def base_llm(self) -> nn.Module:
        """The Hugging Face model inside (the PEFT wrapper's, or the merged model itself)."""
        get_base = getattr(self.llm, "get_base_model", None)
        return get_base() if get_base is not None else self.llm

    def merge_lora(self) -> None:
        """Fold the LoRA matrices into the base weights (``W + B A · alpha / r``) and drop
        the PEFT wrapper: the same outputs (up to rounding) with plain ``nn.Linear``
        layers, as inference and dynamic quantization want. Nothing trains afterwards."""
        if hasattr(self.llm, "merge_and_unload"):
            self.llm = self.llm.merge_and_unload()

    def _cache_kwargs(self, out: Any) -> dict[str, Any]:
        """The KV cache of ``out`` as the next forward call's keyword argument: ``cache``
        in transformers 5.2x (``past_key_values`` is deprecated there), else the old name."""
        base_params = inspect.signature(self.base_llm().forward).parameters
        if "cache" in base_params:
            return {"cache": out.cache}
        return {"past_key_values": out.past_key_values}

    def generate(self, max_new_tokens: int = 256, **batch: Any) -> list[str]:
        """Greedy text for each prompt of a left-padded batch (see :meth:`generate_ids`);
        each text ends before its stop token, special tokens skipped."""
        if self.tokenizer is None:
            raise ValueError("generate needs the tokenizer: pass it to MultimodalLLM")
        stop = self.stop_token_ids()
        ids = self.generate_ids(max_new_tokens=max_new_tokens, stop_ids=stop, **batch)
        texts = []
        for row in ids.tolist():
            end = next((i for i, t in enumerate(row) if t in stop), len(row))
            texts.append(self.tokenizer.decode(row[:end], skip_special_tokens=True))
        return texts

    # ------------------------------------------------------------------ checkpoints

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Projector and LoRA tensors only (detached): what a Phase 2 checkpoint holds."""
        return {k: v.detach() for k, v in self.state_dict().items() if _is_trainable_name(k)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load projector + LoRA tensors, strictly: exactly the keys of
        :meth:`trainable_state_dict` with the same shapes, or a ``KeyError``/``ValueError``
        listing what differs. Base-LLM weights are never touched."""
        own = self.trainable_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"trainable state mismatch: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if bad:
            k = bad[0]
            raise ValueError(
                f"trainable state shape mismatch for {len(bad)} tensors, e.g. {k}: "
                f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            )
        with torch.no_grad():
            for key, target in own.items():
                target.copy_(state[key])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should get."""
        return [p for p in self.parameters() if p.requires_grad]


def build_multimodal_llm(
    llm: nn.Module,
    tokenizer: Any,
    *,
    in_dim: int = 512,
    num_tokens: int = 4,
    modalities: Sequence[str] = MODALITIES,
    projector_hidden_dim: int | None = None,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    lora_target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
    gradient_checkpointing: bool = False,
) -> MultimodalLLM:
    """Projectors sized to ``llm``'s hidden size + the LoRA-wrapped ``llm``."""
    hidden = llm.get_input_embeddings().embedding_dim
    projectors = Projectors(tuple(modalities), in_dim, hidden, num_tokens, projector_hidden_dim)
    return MultimodalLLM(
        llm,
        projectors,
        tokenizer,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_target_modules=lora_target_modules,
        gradient_checkpointing=gradient_checkpointing,
    )


def multimodal_llm_from_config(
    config: Any,
    llm: nn.Module,
    tokenizer: Any,
    *,
    in_dim: int,
    modalities: Sequence[str],
    gradient_checkpointing: bool = False,
) -> MultimodalLLM:
    """:func:`build_multimodal_llm` with the soft-token, projector and LoRA settings of a
    :class:`purrsight.config.Config` (training, export and the benchmarks build alike)."""
    return build_multimodal_llm(
        llm,
        tokenizer,
        in_dim=in_dim,
        num_tokens=config.num_soft_tokens,
        modalities=modalities,
        projector_hidden_dim=config.projector_hidden_dim,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_target_modules=config.lora_target_modules,
        gradient_checkpointing=gradient_checkpointing,
    )
