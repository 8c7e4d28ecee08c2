"""Constrained decoding: the LLM can only write an answer the report schema accepts.

Per request, :class:`AnswerGrammar` gives the JSON schema of exactly the answer the bundle's
LLM writes (its ``answer_fields``, compact JSON, fields in :data:`~purrsight.report.
ANSWER_FIELDS` order): the emotion one of the labels, the arousal one of its levels,
every cue one of its values (or null), and the cues of an input the request did not give
fixed to null (image-only: no vocalization; audio-only: no ears, eyes, tail or posture), so
nothing downstream can describe what was not perceived. Free text (summary, advice) is a
bounded string without quotes, backslashes or control characters.

The schema is compiled by `llguidance <https://github.com/guidance-ai/llguidance>`_ (the
constrained-decoding engine behind Guidance, also used by vLLM, SGLang and llama.cpp): at
each step :class:`GrammarConstraint` asks one matcher per row for the bitmask of allowed
tokens, greedy decoding takes the best allowed token, and the matcher consumes it. The
answer's given start (the scored label, a reading prefix) is consumed first, as the
prompt's last tokens. Once the JSON is closed only a stop token is allowed, so every row
ends with a complete answer: valid by construction. Each token carries at least one byte,
so the longest answer the grammar allows (:meth:`AnswerGrammar.max_bytes`) bounds the tokens
it can take; generation gets at least that many.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from purrsight.inference.reading import CUE_MODALITY
from purrsight.report import ANSWER_FIELDS, READING_FIELDS
from purrsight.vocabulary import AROUSAL_LEVELS, given_inputs

PACKAGE = "llguidance"
"""The constrained-decoding library (a base dependency: requirements/base.txt)."""
TEXT_CHARS = 300
"""Longest free-text field (summary, advice) the grammar lets the model write."""
FREE_CUE_CHARS = 40
"""Longest cue value where the bundle knows no cue vocabulary."""
_PLAIN = r'[^"\\\x00-\x1f\x7f]'
"""A character of free text: no quote, backslash or control character, so JSON writes it as
itself (the compiler is also told to allow no escapes): at most 4 UTF-8 bytes."""
_SPARSE_WORDS = 64
"""A refused row whose mask has at most this many non-zero 32-token words (at most 2048
allowed tokens) compares only the allowed tokens' logits."""
_BIT = np.arange(32, dtype=np.int64)
_OPTIONS = {
    "whitespace_flexible": False,  # compact JSON, as training wrote the answers
    "item_separator": ",",
    "key_separator": ":",
    "json_allowed_escapes": "",
}


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as err:
        raise ImportError(
            f"constrained report generation needs the {PACKAGE!r} package "
            f"(pip install {PACKAGE}; pinned in requirements/base.txt): {err}"
        ) from None
    return llguidance


def _enum(values: Sequence[Any]) -> dict[str, Any]:
    return {"enum": list(dict.fromkeys(values))}


def _text(chars: int) -> dict[str, Any]:
    """A non-empty string of at most ``chars`` plain characters."""
    return {"type": "string", "pattern": f"^{_PLAIN}{{1,{chars}}}$"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class AnswerGrammar:
    """What a bundle's LLM may write, per request (see the module's docstring).

    Args:
        labels: the emotions.
        answer_fields: the fields the model writes (the bundle's ``prompt.answer_fields``).
        arousal: the arousal levels; empty: arousal is null.
        arousal_nullable: arousal may also be null (a reading that could not tell).
        cues: cue → its values (the bundle's reading heads' classes); a cue not in the map
            is any short string; a cue mapped to no values is null. Every cue of a given
            input may also be null (not observed); a cue of an input not given is null.
        text_chars: the longest free-text field.
    """

    labels: tuple[str, ...]
    answer_fields: tuple[str, ...] = READING_FIELDS
    arousal: tuple[str, ...] = AROUSAL_LEVELS
    arousal_nullable: bool = False
    cues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    text_chars: int = TEXT_CHARS

    def __post_init__(self) -> None:
        unknown = [f for f in self.answer_fields if f not in ANSWER_FIELDS]
        if unknown or "emotion" not in self.answer_fields:
            raise ValueError(
                f"answer_fields {list(self.answer_fields)}: the emotion and fields of "
                f"{list(ANSWER_FIELDS)} only"
            )
        if not self.labels:
            raise ValueError("a grammar needs labels")

    def _cue(self, cue: str, given: set[str]) -> dict[str, Any]:
        if CUE_MODALITY[cue] not in given:
            return {"type": "null"}
        if cue not in self.cues:
            return {"anyOf": [_text(FREE_CUE_CHARS), {"type": "null"}]}
        return _enum([*self.cues[cue], None])

    def schema(self, modalities: Iterable[str]) -> dict[str, Any]:
        """The JSON schema of the answer to a request giving ``modalities``."""
        given = given_inputs(modalities)
        properties: dict[str, Any] = {}
        for name in ANSWER_FIELDS:
            if name not in self.answer_fields:
                continue
            if name == "emotion":
                properties[name] = _enum(self.labels)
            elif name == "arousal":
                levels = [*self.arousal, None] if self.arousal_nullable else self.arousal
                properties[name] = _enum(levels) if levels else {"type": "null"}
            elif name == "evidence":
                properties[name] = _object({c: self._cue(c, given) for c in CUE_MODALITY})
            else:
                properties[name] = _text(self.text_chars)
        return _object(properties)

    def max_bytes(self, modalities: Iterable[str]) -> int:
        """UTF-8 bytes of the longest answer :meth:`schema` accepts."""
        return _longest(self.schema(modalities))


def _longest(node: dict[str, Any]) -> int:
    """Bytes of the longest compact JSON a schema node built here accepts."""
    if "enum" in node:
        return max(len(_compact(v).encode()) for v in node["enum"])
    if "anyOf" in node:
        return max(_longest(n) for n in node["anyOf"])
    kind = node["type"]
    if kind == "null":
        return 4
    if kind == "string":  # "^<char>{1,n}$": quotes + n characters of at most 4 bytes
        return 2 + 4 * int(re.fullmatch(r".*\{1,(\d+)\}\$", node["pattern"]).group(1))
    members = [len(_compact(k).encode()) + 1 + _longest(v) for k, v in node["properties"].items()]
    return 2 + sum(members) + max(len(members) - 1, 0)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------------------------- matching


_TOKENIZERS: weakref.WeakKeyDictionary[Any, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def ll_tokenizer(tokenizer: Any, vocab_size: int, stop_ids: Iterable[int]) -> Any:
    """llguidance's view of ``tokenizer`` (a transformers fast tokenizer or a
    :class:`~purrsight.models.lite_tokenizer.LiteTokenizer`): built once per tokenizer,
    logits width and stop tokens (about a second for a 150k vocabulary)."""
    llg = _llguidance()
    stops = sorted({int(i) for i in stop_ids})
    key = (int(vocab_size), tuple(stops))
    try:
        cache = _TOKENIZERS.setdefault(tokenizer, {})
    except TypeError:  # not weakly referenceable: no cache
        cache = {}
    if key not in cache:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"constrained generation needs a fast tokenizer (a `tokenizers` backend); "
                f"got {type(tokenizer).__name__}"
            )
        backend = backend.__class__.from_str(backend.to_str())  # a copy: padding off
        backend.no_padding()
        backend.no_truncation()
        cache[key] = llg.LLTokenizer(backend.to_str(), n_vocab=int(vocab_size), eos_token=stops)
    return cache[key]


class GrammarConstraint:
    """Token masks for one left-padded batch: one matcher per row (the
    :class:`~purrsight.models.mm_llm.TokenConstraint` that ``generate_ids`` applies).

    Args:
        tokenizer: the LLM's tokenizer.
        schemas: per row, the JSON schema of its answer.
        prefixes: per row, the token ids of its answer's given start (already in the
            prompt); the grammar consumes them first.
        stop_ids: the tokens that end a row; the grammar allows them once the answer is
            complete, and only then.
    """

    def __init__(
        self,
        tokenizer: Any,
        schemas: Sequence[dict[str, Any]],
        prefixes: Sequence[Sequence[int]],
        stop_ids: Iterable[int],
    ) -> None:
        if len(schemas) != len(prefixes):
            raise ValueError(f"{len(schemas)} schemas for {len(prefixes)} prefixes")
        self.tokenizer = tokenizer
        self.stop_ids = sorted({int(i) for i in stop_ids})
        llg = _llguidance()
        by_text: dict[str, str] = {}
        self.grammars = []
        for schema in schemas:
            text = json.dumps(schema, sort_keys=False)
            if text not in by_text:
                by_text[text] = llg.LLMatcher.grammar_from_json_schema(text, defaults=_OPTIONS)
            self.grammars.append(by_text[text])
        self.prefixes = [list(p) for p in prefixes]
        self.matchers: list[Any] | None = None
        self.finished = [False] * len(self.prefixes)
        """Per row: a stop token was consumed (the grammar allows one only once the answer
        is complete)."""
        self._bits: torch.Tensor | None = None

    def _start(self, vocab_size: int) -> None:
        llg = _llguidance()
        tok = ll_tokenizer(self.tokenizer, vocab_size, self.stop_ids)
        self.matchers = []
        for row, (grammar, prefix) in enumerate(zip(self.grammars, self.prefixes, strict=True)):
            matcher = llg.LLMatcher(tok, grammar, log_level=0)
            if matcher.is_error():
                raise ValueError(f"row {row}: the answer grammar is invalid: {matcher.get_error()}")
            if prefix and not matcher.consume_tokens(prefix):
                text = self.tokenizer.decode(prefix)
                raise ValueError(
                    f"row {row}: the answer's start {text!r} breaks its grammar: "
                    f"{matcher.get_error()}"
                )
            self.matchers.append(matcher)
        self._bits = torch.zeros((len(self.matchers), (vocab_size + 31) // 32), dtype=torch.int32)

    def _ready(self, logits: torch.Tensor) -> None:
        if self.matchers is None:
            self._start(logits.shape[-1])
        assert self.matchers is not None
        if logits.shape[0] != len(self.matchers):
            raise ValueError(f"{logits.shape[0]} rows of logits for {len(self.matchers)} matchers")

    def _bitmasks(self, rows: Sequence[int]) -> np.ndarray:
        """[len(rows), ceil(v / 32)] int32: bit ``t % 32`` of word ``t // 32`` is set when
        the row may write token ``t`` next."""
        assert self.matchers is not None and self._bits is not None
        bits = self._bits[: len(rows)]
        width = bits.shape[1] * bits.element_size()
        for i, row in enumerate(rows):
            matcher = self.matchers[row]
            matcher.unsafe_compute_mask_ptr(bits[i].data_ptr(), width)
            if matcher.is_error():
                raise RuntimeError(f"row {row}: the grammar failed: {matcher.get_error()}")
        return bits.numpy()

    def _allowed(self, rows: Sequence[int], vocab: int) -> torch.Tensor:
        """[len(rows), vocab] bool: the tokens each of ``rows`` may write next."""
        bits = self._bitmasks(rows)
        unpacked = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")
        return torch.from_numpy(unpacked[:, :vocab]).view(torch.bool)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` [b, v] with every token the grammar forbids at -inf: once a row's
        answer is complete only its stop tokens are left (rows already stopped are left
        as they are)."""
        self._ready(logits)
        rows = [r for r in range(logits.shape[0]) if not self.finished[r]]
        out = logits.clone()
        if rows:
            allowed = self._allowed(rows, logits.shape[1]).to(logits.device)
            index = torch.tensor(rows, device=logits.device)
            out[index] = torch.where(allowed, logits[index], float("-inf"))
        return out

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """[b] the best token of each row that its grammar allows (greedy decoding):
        ``mask(logits).argmax(-1)``, computed cheaply. The unconstrained best token is
        checked first; only rows where the grammar refuses it get a token mask (a trained
        model mostly writes what the grammar allows anyway), and where few tokens are
        allowed (a label, a cue value, punctuation) only their logits are compared."""
        self._ready(logits)
        assert self.matchers is not None
        tokens = logits.argmax(-1)
        chosen = tokens.tolist()
        refused = [
            row
            for row, token in enumerate(chosen)
            if not self.finished[row] and self.matchers[row].validate_tokens([token]) != 1
        ]
        if not refused:
            return tokens
        vocab = logits.shape[1]
        bits = self._bitmasks(refused)
        dense = []
        for i, row in enumerate(refused):
            words = np.flatnonzero(bits[i])
            if len(words) > _SPARSE_WORDS:
                dense.append(i)
                continue
            unpacked = np.unpackbits(bits[i, words].view(np.uint8), bitorder="little")
            ids = (words[:, None] * 32 + _BIT).reshape(-1)[unpacked.astype(bool)]
            ids = torch.from_numpy(ids[ids < vocab]).to(logits.device)
            chosen[row] = int(ids[logits[row, ids].argmax()])
        if dense:
            unpacked = np.unpackbits(bits[dense].view(np.uint8), axis=1, bitorder="little")
            allowed = torch.from_numpy(unpacked[:, :vocab]).view(torch.bool).to(logits.device)
            index = torch.tensor([refused[i] for i in dense], device=logits.device)
            best = torch.where(allowed, logits[index], float("-inf")).argmax(-1).tolist()
            for i, token in zip(dense, best, strict=True):
                chosen[refused[i]] = token
        return torch.tensor(chosen, dtype=tokens.dtype, device=tokens.device)

    def advance(self, tokens: torch.Tensor) -> None:
        """Each row's matcher consumes the row's chosen token (stopped rows: nothing)."""
        assert self.matchers is not None, "pick() or mask() comes first"
        stops = set(self.stop_ids)
        for row, token in enumerate(tokens.tolist()):
            if self.finished[row]:
                continue
            matcher = self.matchers[row]
            if not matcher.consume_token(int(token)):
                raise RuntimeError(f"row {row}: token {token} breaks the grammar")
            self.finished[row] = int(token) in stops


def bundle_grammar(
    labels: Sequence[str], answer_fields: Sequence[str], reading: Any = None
) -> AnswerGrammar:
    """A bundle's grammar: its labels and answer fields; the cue values and arousal levels
    its reading heads were fitted on (plus ``unclear``, which a reading writes for a cue it
    is unsure of), else the default arousal levels and any short cue text."""
    if reading is None:
        return AnswerGrammar(tuple(labels), tuple(answer_fields))
    from purrsight.inference.reading import UNCLEAR

    specs = reading.heads.specs
    cues = {c: (*specs[c].classes, UNCLEAR) if c in specs else () for c in CUE_MODALITY}
    arousal = tuple(specs["arousal"].classes) if "arousal" in specs else ()
    return AnswerGrammar(tuple(labels), tuple(answer_fields), arousal, True, cues)
