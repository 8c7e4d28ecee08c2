"""A decoder-only LLM of the Llama / Qwen2 family in plain torch, for inference.

Why: loading a causal LM through transformers costs seconds before the first token
(importing it, building the model, PEFT wrapping and merging the LoRA adapter, casting to
the compute dtype). A bundle therefore also keeps its LLM *ready*: LoRA folded in, the
weights already in the compute dtype and in this module's layout (q/k/v fused into one
matrix, gate/up into another), in a safetensors file that is memory-mapped at load
(:func:`load_lite_weights`): building the model is assigning those tensors, nothing is
converted, nothing is imported but torch and safetensors.

The computation is the transformers one (``LlamaForCausalLM`` / ``Qwen2ForCausalLM``):
RMSNorm in fp32, rotary embeddings (default type), grouped-query attention through SDPA,
SiLU-gated MLP, tied or separate LM head. ``tests/test_lite_llm.py`` checks the logits and
greedy generations against transformers on tiny random models of both families; the export
checks them again on the real model before it writes the ready files
(:mod:`purrsight.inference.ready_llm`). One deliberate difference: the rotary inverse
frequencies stay fp32 when the weights are bf16 (transformers rounds them to bf16 with the
rest of the model), as in training, where the weights were fp32 under autocast.

:class:`LiteDecoder` answers the calls the inference code makes on a transformers model:
``forward(inputs_embeds=… | input_ids=…, attention_mask=[b, s] 0/1 or [b, 1, q, k]
additive, position_ids=…, past_key_values=…, use_cache=…, logits_to_keep=int | tensor)``
returning ``.logits`` and ``.past_key_values``; ``get_input_embeddings()``,
``get_output_embeddings()``, ``config`` and ``generation_config``.

Shapes: b = batch, s = new tokens, t = cached tokens, d = hidden size, h / g = query /
key-value heads, e = head size, v = vocabulary size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_TYPES = ("llama", "qwen2")


class UnsupportedModel(ValueError):
    """The model is not one :class:`LiteDecoder` computes exactly (named in the message)."""


@dataclass(frozen=True)
class LiteConfig:
    """The architecture numbers :class:`LiteDecoder` needs (JSON-ready with ``asdict``)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    eos_token_ids: list[int] = field(default_factory=list)
    """The generation config's end ids (``generation_config.eos_token_id``)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LiteConfig:
        names = set(cls.__dataclass_fields__)
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise UnsupportedModel(f"lite config: unknown keys {unknown}, missing {missing}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hf(cls, config: Any, eos_token_ids: list[int] | None = None) -> LiteConfig:
        """From a transformers config object; :class:`UnsupportedModel` names what differs
        from what this module computes (another family, another activation, scaled rope,
        sliding windows)."""
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_TYPES:
            raise UnsupportedModel(f"model_type {model_type!r} (supported: {SUPPORTED_TYPES})")
        act = getattr(config, "hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModel(f"hidden_act {act!r} (supported: silu)")
        theta, rope_type = _rope(config)
        if rope_type != "default":
            raise UnsupportedModel(f"rope type {rope_type!r} (supported: default)")
        if getattr(config, "use_sliding_window", False):
            raise UnsupportedModel("sliding-window attention")
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if model_type == "qwen2":
            qkv_bias, o_bias, mlp_bias = True, False, False
        else:
            bias = bool(getattr(config, "attention_bias", False))
            qkv_bias, o_bias = bias, bias
            mlp_bias = bool(getattr(config, "mlp_bias", False))
        return cls(
            model_type=str(model_type),
            vocab_size=int(config.vocab_size),
            hidden_size=int(config.hidden_size),
            intermediate_size=int(config.intermediate_size),
            num_layers=int(config.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(config.rms_norm_eps),
            rope_theta=float(theta),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=mlp_bias,
            eos_token_ids=list(eos_token_ids or []),
        )


def _rope(config: Any) -> tuple[float, str]:
    """(theta, rope type) from a transformers 5 ``rope_parameters`` or the older
    ``rope_theta`` + ``rope_scaling``."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"]), str(params.get("rope_type", "default"))
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    return float(getattr(config, "rope_theta", 10000.0)), str(rope_type)


# ----------------------------------------------------------------------------- modules
# Built around given tensors (a mapped file's): nothing is allocated or initialised, which
# for nn.Linear / nn.Embedding would cost a random init (or, on the meta device, importing
# torch._dynamo: over a second).


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(nn.Module):
    """One decoder layer: pre-norm attention, pre-norm gated MLP, residuals."""

    def __init__(self, c: LiteConfig, w: dict[str, torch.Tensor], prefix: str) -> None:
        super().__init__()
        self.h, self.g, self.e = c.num_heads, c.num_kv_heads, c.head_dim
        self.attn_norm = RMSNorm(w[prefix + "attn_norm.weight"], c.rms_norm_eps)
        self.qkv = Linear(w[prefix + "qkv.weight"], w.get(prefix + "qkv.bias"))
        self.o = Linear(w[prefix + "o.weight"], w.get(prefix + "o.bias"))
        self.mlp_norm = RMSNorm(w[prefix + "mlp_norm.weight"], c.rms_norm_eps)
        self.gate_up = Linear(w[prefix + "gate_up.weight"], w.get(prefix + "gate_up.bias"))
        self.down = Linear(w[prefix + "down.weight"], w.get(prefix + "down.bias"))

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, s, _ = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(b, s, self.h + 2 * self.g, self.e).transpose(1, 2)
        q, k, v = qkv.split([self.h, self.g, self.g], dim=1)  # [b, h|g, s, e]
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        new_cache = (k, v)
        if self.g != self.h:
            k = k.repeat_interleave(self.h // self.g, dim=1)
            v = v.repeat_interleave(self.h // self.g, dim=1)
        causal = mask is None and s > 1
        if causal and k.shape[2] != s:
            raise ValueError("a multi-token step after a cache needs an attention mask")
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=self.e**-0.5
        )
        x = x + self.o(attn.transpose(1, 2).reshape(b, s, self.h * self.e))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up), new_cache


@dataclass
class LiteOutput:
    logits: torch.Tensor
    """[b, kept positions, v]."""
    past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    """Per layer (keys, values) [b, g, t + s, e]; given back as ``past_key_values``."""


class LiteDecoder(nn.Module):
    """The causal LM; see the module docstring for the calls it answers."""

    def __init__(self, c: LiteConfig, weights: dict[str, torch.Tensor]) -> None:
        """``weights``: the tensors in this layout (:func:`lite_state_dict`), used as they
        are (a mapped file's stay mapped)."""
        super().__init__()
        self.lite_config = c
        self.embed = Embedding(weights["embed.weight"])
        self.layers = nn.ModuleList(Layer(c, weights, f"layers.{i}.") for i in range(c.num_layers))
        self.norm = RMSNorm(weights["norm.weight"], c.rms_norm_eps)
        if c.tie_word_embeddings:
            self.lm_head = Linear(weights["embed.weight"])
            self.lm_head.weight = self.embed.weight
        else:
            self.lm_head = Linear(weights["lm_head.weight"])
        # What code written for transformers models reads (scoring switches attention
        # implementations through it; this model always runs SDPA, which takes masks).
        self.config = SimpleNamespace(
            model_type=c.model_type,
            hidden_size=c.hidden_size,
            vocab_size=c.vocab_size,
            _attn_implementation="sdpa",
        )
        self.generation_config = SimpleNamespace(eos_token_id=list(c.eos_token_ids) or None)
        # fp32 whatever the weights' dtype (a plain attribute: ``.to(bf16)`` leaves it),
        # made on first use (a model built on the meta device has no real tensors).
        self._inv_freq: torch.Tensor | None = None
        self._prefixes: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @torch.no_grad()
    def prefix_cache(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values of the token sequence ``ids`` (a prompt's fixed opening),
        computed once per sequence and dtype and kept: given back as ``past_key_values``
        with [b, 1, s, len(ids) + s] masks, rows that start with ``ids`` skip them."""
        dtype = self.embed.weight.dtype
        key = (tuple(ids), dtype, self.embed.weight.device)
        if key not in self._prefixes:
            tokens = torch.tensor([ids], device=self.embed.weight.device)
            self._prefixes[key] = self(input_ids=tokens, use_cache=True).past_key_values
        return self._prefixes[key]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype):
        if self._inv_freq is None or self._inv_freq.device != positions.device:
            c = self.lite_config
            exponents = torch.arange(0, c.head_dim, 2, dtype=torch.int64, device=positions.device)
            self._inv_freq = 1.0 / (c.rope_theta ** (exponents.float() / c.head_dim))
        freqs = positions[..., None].float() * self._inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        **unused: Any,
    ) -> LiteOutput:
        """Logits at the kept positions (``logits_to_keep``: the last n, 0 for all, or a
        tensor of column indices) and, with ``use_cache``, the extended cache."""
        if unused.get("labels") is not None:
            raise ValueError("LiteDecoder is for inference: it computes no loss")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        b, s, _ = x.shape
        past = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + s, device=x.device).expand(b, s)
        mask = _additive_mask(attention_mask, b, s, past, x.dtype, x.device)
        cos, sin = self._rotary(position_ids, x.dtype)
        caches = []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            caches.append(cache)
        x = self.norm(x)
        if isinstance(logits_to_keep, torch.Tensor):
            x = x[:, logits_to_keep.to(x.device)]
        elif logits_to_keep:
            x = x[:, -int(logits_to_keep) :]
        return LiteOutput(self.lm_head(x), caches if use_cache else None)


def _additive_mask(
    mask: torch.Tensor | None, b: int, s: int, past: int, dtype: torch.dtype, device
) -> torch.Tensor | None:
    """The SDPA mask: None (causal, no padding), a given 4D mask as it is, or from a
    [b, past + s] 0/1 mask the causal + padding mask [b, 1, s, past + s], additive with
    the dtype's minimum (never -inf: a left-padding row that sees nothing stays finite)."""
    if mask is None:
        return None
    if mask.dim() == 4:
        return mask.to(device)
    total = past + s
    if mask.shape != (b, total):
        raise ValueError(f"attention_mask {tuple(mask.shape)}, expected {(b, total)}")
    if s == 1 and bool(mask.all()):
        return None  # one new token that sees everything before it
    query = torch.arange(past, total, device=device)[:, None]  # [s, 1]
    key = torch.arange(total, device=device)[None, :]  # [1, total]
    sees = (key <= query)[None] & mask.to(device).bool()[:, None, :]  # [b, s, total]
    out = torch.zeros(b, 1, s, total, dtype=dtype, device=device)
    return out.masked_fill_(~sees[:, None], torch.finfo(dtype).min)


# ----------------------------------------------------------------------------- weights


def lite_state_dict(hf_model: nn.Module, c: LiteConfig) -> dict[str, torch.Tensor]:
    """A transformers Llama / Qwen2 causal LM's weights in :class:`LiteDecoder`'s layout
    (q/k/v and gate/up concatenated; a tied LM head stored once)."""
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    prefix = "model."
    out = {"embed.weight": sd[f"{prefix}embed_tokens.weight"]}
    for i in range(c.num_layers):
        p = f"{prefix}layers.{i}."
        attn, mlp = p + "self_attn.", p + "mlp."
        out[f"layers.{i}.attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[f"layers.{i}.mlp_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[f"layers.{i}.qkv.weight"] = torch.cat([sd[f"{attn}{n}_proj.weight"] for n in "qkv"])
        if c.qkv_bias:
            out[f"layers.{i}.qkv.bias"] = torch.cat([sd[f"{attn}{n}_proj.bias"] for n in "qkv"])
        out[f"layers.{i}.o.weight"] = sd[attn + "o_proj.weight"]
        if c.o_bias:
            out[f"layers.{i}.o.bias"] = sd[attn + "o_proj.bias"]
        out[f"layers.{i}.gate_up.weight"] = torch.cat(
            [sd[mlp + "gate_proj.weight"], sd[mlp + "up_proj.weight"]]
        )
        out[f"layers.{i}.down.weight"] = sd[mlp + "down_proj.weight"]
        if c.mlp_bias:
            out[f"layers.{i}.gate_up.bias"] = torch.cat(
                [sd[mlp + "gate_proj.bias"], sd[mlp + "up_proj.bias"]]
            )
            out[f"layers.{i}.down.bias"] = sd[mlp + "down_proj.bias"]
    out["norm.weight"] = sd[f"{prefix}norm.weight"]
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def save_lite_weights(path: Path, state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """``state`` in ``dtype`` as one safetensors file (contiguous, as mapping needs)."""
    from safetensors.torch import save_file

    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(path))


def expected_shapes(c: LiteConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the layout and its shape."""
    d, e = c.hidden_size, c.head_dim
    qkv = (c.num_heads + 2 * c.num_kv_heads) * e
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (c.vocab_size, d), "norm.weight": (d,)}
    for i in range(c.num_layers):
        p = f"layers.{i}."
        shapes |= {
            p + "attn_norm.weight": (d,),
            p + "mlp_norm.weight": (d,),
            p + "qkv.weight": (qkv, d),
            p + "o.weight": (d, c.num_heads * e),
            p + "gate_up.weight": (2 * c.intermediate_size, d),
            p + "down.weight": (d, c.intermediate_size),
        }
        if c.qkv_bias:
            shapes[p + "qkv.bias"] = (qkv,)
        if c.o_bias:
            shapes[p + "o.bias"] = (d,)
        if c.mlp_bias:
            shapes[p + "gate_up.bias"] = (2 * c.intermediate_size,)
            shapes[p + "down.bias"] = (d,)
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, d)
    return shapes


def load_lite_weights(c: LiteConfig, path: Path) -> LiteDecoder:
    """The model with the tensors of ``path`` memory-mapped in place (pages of the file,
    shared by the processes that map it; nothing is copied or converted).

    Raises:
        ValueError: the file's tensors do not fit ``c`` (names or shapes).
    """
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = expected_shapes(c)
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        odd = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        raise ValueError(
            f"{path}: the weights do not fit the model (missing {missing[:2]}, unexpected "
            f"{extra[:2]}, other shapes {odd[:2]})"
        )
    return LiteDecoder(c, state).eval()
