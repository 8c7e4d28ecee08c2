"""Phase 2 prompts: the tokenizer's own chat template, soft-token slots, labels, collate.

One example is rendered with ``tokenizer.apply_chat_template`` as

    system:    SYSTEM_PROMPT (answers with one JSON report)
    user:      "Image: <k slots>\\nAudio: <k slots>\\n<instruction>"   (present modalities only)
    assistant: <response JSON><end-of-turn>

Placeholder scheme (why no new vocabulary): each modality is written into the template
as a sentinel string (``<|cat_image|>`` …) that is split out of the rendered text before
tokenising; the text pieces are tokenised separately and ``k`` slot ids are put between
them, their positions recorded. The slots' ids are never looked up meaningfully — the
model replaces those rows of the embeddings with the projector's soft tokens. So the
tokenizer and the LLM's embedding matrix stay exactly as shipped: no ``resize`` (SmolLM2's
vocabulary is full, tied embeddings would grow the output layer too), no new rows the LLM
could generate, nothing extra to save beside the LoRA adapter, and any chat template
works, because nothing relies on how a tokenizer would split a new marker.

Labels are ``IGNORE_INDEX`` on the system and user turns and on the slots; the
assistant's tokens and its end-of-turn token (``tokenizer.eos_token``, ``<|im_end|>`` for
Qwen2.5/SmolLM2) are learned, so generation learns to stop. Whatever the template writes
after the end-of-turn token (a newline) is dropped: it is unlabelled and last.

Shapes: b = batch, s = sequence length (longest in the batch), k = slots per modality,
e = aligned feature size; a :class:`Batch` has n samples in r rows (r = n unless packed,
see :mod:`purrsight.data.packing`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from purrsight.data.manifest import Sample
from purrsight.report import ANSWER_FIELDS
from purrsight.vocabulary import MODALITIES

IGNORE_INDEX = -100
# Empty on purpose: a fine-tuned model needs no instructions, and every token of a system
# prompt is paid at every training step and every prediction. The chat template still gets
# a system turn (empty), so templates that insert a default one when there is none
# (SmolLM2's: 17 tokens) do not. Measured on the demo: the 30-token wording cost ~20 % of
# each step once answers were short (~45 tokens).
SYSTEM_PROMPT = ""
# Written into the chat template where a modality's soft tokens go, then split out again;
# never tokenised. Chosen so no tokenizer's special tokens and no sane text contain them.
PLACEHOLDERS: dict[str, str] = {m: f"<|cat_{m}|>" for m in MODALITIES}
MODALITY_NAMES: dict[str, str] = {m: m.capitalize() for m in MODALITIES}  # "Image", …
_SENTINEL_RE = re.compile("(" + "|".join(re.escape(p) for p in PLACEHOLDERS.values()) + ")")
_SENTINEL_TO_MODALITY = {p: m for m, p in PLACEHOLDERS.items()}


class PromptTooLongError(ValueError):
    """The prompt (system, user text and soft-token slots) alone exceeds max_text_length."""


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised example (lists, not tensors: cheap to build in a worker)."""

    input_ids: list[int]
    labels: list[int]
    """``IGNORE_INDEX`` everywhere except the assistant's tokens and its end token."""
    placeholders: dict[str, int]
    """{modality: index of its first slot}; the slots are ``[start, start + k)``."""
    num_tokens: int
    truncated: bool = False
    """Response tokens were cut to fit ``max_text_length``."""


@dataclass(frozen=True)
class _Prompt:
    ids: list[int]
    placeholders: dict[str, int]
    text: str


# ----------------------------------------------------------------------------- messages


def order_modalities(modalities: Sequence[str]) -> list[str]:
    """Present modalities in the fixed order image, audio, text (so one sample always
    renders the same way). Raises ValueError on an unknown or repeated modality."""
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; allowed: {list(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"repeated modality in {list(modalities)}")
    if not modalities:
        raise ValueError("a prompt needs at least one modality")
    return [m for m in MODALITIES if m in modalities]


def user_content(modalities: Sequence[str], instruction: str) -> str:
    """The user turn: one labelled placeholder line per present modality, then the
    instruction."""
    lines = [f"{MODALITY_NAMES[m]}: {PLACEHOLDERS[m]}" for m in order_modalities(modalities)]
    return "\n".join([*lines, instruction])


def build_messages(
    modalities: Sequence[str],
    instruction: str,
    response: str | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, str]]:
    """Chat messages for ``apply_chat_template``; the assistant turn only with a response."""
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_content(modalities, instruction)},
    ]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes the assistant's turn: the tokenizer's ``eos_token``, which
    chat models set to their end-of-turn token (``<|im_end|>``)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; cannot mark the end of a turn")
    return int(tokenizer.eos_token_id)


# ----------------------------------------------------------------------------- encoding


def _tokenize(tokenizer: Any, text: str) -> list[int]:
    # The chat template already wrote every special token (BOS included, where a template
    # has one), so the tokenizer must add none of its own.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def pad_id(tokenizer: Any) -> int:
    """The id for positions nothing reads (masked padding, soft-token slots): pad, else
    the end token; any valid id works, pad keeps decoded prompts readable."""
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else end_of_turn_id(tokenizer))


def _check_no_sentinel(texts: Sequence[str], where: str) -> None:
    for text in texts:
        found = _SENTINEL_RE.search(text)
        if found:
            raise ValueError(f"{where}: text contains the reserved marker {found.group(0)!r}")


def _encode_prompt_text(tokenizer: Any, text: str, num_tokens: int) -> _Prompt:
    """Rendered prompt text → ids with ``num_tokens`` slots per sentinel."""
    ids: list[int] = []
    starts: dict[str, int] = {}
    for piece in _SENTINEL_RE.split(text):
        modality = _SENTINEL_TO_MODALITY.get(piece)
        if modality is None:
            ids.extend(_tokenize(tokenizer, piece))
        else:
            starts[modality] = len(ids)
            ids.extend([pad_id(tokenizer)] * num_tokens)  # rows replaced by soft tokens
    return _Prompt(ids=ids, placeholders=starts, text=text)


def _render_prompt(
    tokenizer: Any, modalities: Sequence[str], instruction: str, system_prompt: str
) -> str:
    messages = build_messages(modalities, instruction, system_prompt=system_prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(
    tokenizer: Any,
    modalities: Sequence[str],
    instruction: str,
    num_tokens: int,
    system_prompt: str = SYSTEM_PROMPT,
) -> EncodedExample:
    """The generation prompt (system + user + the assistant header), all labels ignored."""
    _check_no_sentinel([instruction, system_prompt], "prompt")
    prompt = _encode_prompt_text(
        tokenizer, _render_prompt(tokenizer, modalities, instruction, system_prompt), num_tokens
    )
    return EncodedExample(
        input_ids=prompt.ids,
        labels=[IGNORE_INDEX] * len(prompt.ids),
        placeholders=prompt.placeholders,
        num_tokens=num_tokens,
    )


def encode_example(
    tokenizer: Any,
    modalities: Sequence[str],
    instruction: str,
    response: str,
    num_tokens: int,
    max_length: int,
    sample_id: str = "<sample>",
    system_prompt: str = SYSTEM_PROMPT,
) -> EncodedExample:
    """A training example: prompt + assistant response + end-of-turn token.

    Truncation to ``max_length`` only ever cuts the response's tail; the prompt (and so
    every slot) and the end-of-turn token are kept.

    Raises:
        PromptTooLongError: the prompt plus the end token alone exceed ``max_length``.
        ValueError: the chat template renders the assistant turn in a way this scheme
            cannot split (it does not start with the generation prompt, or has no end
            token), or a text contains a reserved placeholder marker.
    """
    _check_no_sentinel([instruction, response, system_prompt], sample_id)
    prompt_text = _render_prompt(tokenizer, modalities, instruction, system_prompt)
    full_text = tokenizer.apply_chat_template(
        build_messages(modalities, instruction, response, system_prompt), tokenize=False
    )
    if not full_text.startswith(prompt_text):
        # Training must see exactly the prefix generation will be given.
        raise ValueError(
            f"{sample_id}: the chat template does not render the conversation as the "
            "generation prompt followed by the answer; this tokenizer's template is not supported"
        )
    prompt = _encode_prompt_text(tokenizer, prompt_text, num_tokens)
    answer = _tokenize(tokenizer, full_text[len(prompt_text) :])
    end_id = end_of_turn_id(tokenizer)
    if end_id not in answer:
        raise ValueError(
            f"{sample_id}: the chat template does not close the assistant turn with the "
            f"end token {tokenizer.eos_token!r}"
        )
    answer = answer[: answer.index(end_id) + 1]  # drop what follows the end token

    budget = max_length - len(prompt.ids)
    if budget < 1:
        raise PromptTooLongError(
            f"{sample_id}: the prompt alone is {len(prompt.ids)} tokens ({len(modalities)} "
            f"modalities × {num_tokens} soft tokens, system prompt and instruction) plus 1 end "
            f"token, over max_text_length={max_length}; raise max_text_length or shorten "
            "the instruction"
        )
    truncated = len(answer) > budget
    if truncated:
        answer = [*answer[: budget - 1], end_id]
    return EncodedExample(
        input_ids=prompt.ids + answer,
        labels=[IGNORE_INDEX] * len(prompt.ids) + answer,
        placeholders=prompt.placeholders,
        num_tokens=num_tokens,
        truncated=truncated,
    )


def encode_sample(
    sample: Sample,
    tokenizer: Any,
    features: dict[str, torch.Tensor],
    num_tokens: int,
    max_length: int,
    system_prompt: str = SYSTEM_PROMPT,
    answer_fields: Sequence[str] = ANSWER_FIELDS,
) -> dict[str, Any]:
    """A :class:`Sample` and its aligned features ({modality: [e]}, present ones only)
    → one item for :func:`collate`. The prompt gets a slot group per feature given; a
    report response is written as its ``answer_fields``."""
    encoded = encode_example(
        tokenizer,
        list(features),
        sample.instruction,
        sample.response_json(answer_fields),
        num_tokens,
        max_length,
        sample_id=sample.source or sample.id,
        system_prompt=system_prompt,
    )
    return make_item(encoded, features, sample.id)


def make_item(
    encoded: EncodedExample, features: dict[str, torch.Tensor], item_id: str = ""
) -> dict[str, Any]:
    """An :class:`EncodedExample` + its features ({modality: [e]}) → a :func:`collate` item."""
    if set(features) != set(encoded.placeholders):
        raise ValueError(
            f"{item_id}: features for {sorted(features)} but slots for "
            f"{sorted(encoded.placeholders)}"
        )
    return {
        "id": item_id,
        "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
        "labels": torch.tensor(encoded.labels, dtype=torch.long),
        "placeholders": dict(encoded.placeholders),
        "num_tokens": encoded.num_tokens,
        "features": {m: f.detach().float().reshape(-1) for m, f in features.items()},
        "truncated": encoded.truncated,
    }


# ----------------------------------------------------------------------------- collate


@dataclass
class Batch:
    """A padded batch (:func:`collate`) or a packed one
    (:func:`purrsight.data.packing.collate_packed`: several samples per row)."""

    input_ids: torch.Tensor
    """[r, s] long (r = rows: one per sample unless packed)."""
    attention_mask: torch.Tensor
    """[r, s] long, 0 on padding."""
    labels: torch.Tensor
    """[r, s] long, ``IGNORE_INDEX`` on prompt, slots and padding."""
    placeholder_positions: dict[str, torch.Tensor]
    """{modality: [n, k] long}: sample i's slot positions within its row (0 where absent)."""
    features: dict[str, torch.Tensor]
    """{modality: [n, e] float32}: zero rows where absent."""
    present: dict[str, torch.Tensor]
    """{modality: [n] bool}."""
    ids: list[str] = field(default_factory=list)
    position_ids: torch.Tensor | None = None
    """[r, s] long, restarting at 0 at every packed sample; None: not packed."""
    sample_rows: torch.Tensor | None = None
    """[n] long: the row holding sample i; None: sample i is row i."""

    @property
    def num_samples(self) -> int:
        """n: samples in the batch (rows, unless packed)."""
        if self.sample_rows is not None:
            return int(self.sample_rows.numel())
        return int(self.input_ids.shape[0])

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for ``MultimodalLLM.forward`` / ``generate`` (the packing
        fields only when packed: generation takes padded batches)."""
        inputs = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "labels": self.labels,
            "features": self.features,
            "present": self.present,
            "placeholder_positions": self.placeholder_positions,
        }
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
            inputs["sample_rows"] = self.sample_rows
        return inputs

    def to(self, device: torch.device | str) -> Batch:
        def move(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device) for k, v in d.items()}

        def move_optional(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=self.labels.to(device),
            placeholder_positions=move(self.placeholder_positions),
            features=move(self.features),
            present=move(self.present),
            ids=list(self.ids),
            position_ids=move_optional(self.position_ids),
            sample_rows=move_optional(self.sample_rows),
        )


def padded_length(longest: int, multiple: int) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (>= 1)."""
    if multiple < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {multiple}")
    return -(-longest // multiple) * multiple


def batch_features(
    batch: Sequence[dict[str, Any]], offsets: Sequence[int]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The items' features, presence and slot positions, item i's shifted by
    ``offsets[i]`` (where its tokens start in its row).

    Returns:
        ({modality: [n, e]} features, {modality: [n]} present, {modality: [n, k]}
        positions), zero rows where a modality is absent.
    """
    n, k = len(batch), _common(batch, "num_tokens")
    modalities = [m for m in MODALITIES if any(m in item["features"] for item in batch)]
    features = {m: torch.zeros(n, _feature_dim(batch, m)) for m in modalities}
    present = {m: torch.zeros(n, dtype=torch.bool) for m in modalities}
    positions = {m: torch.zeros(n, k, dtype=torch.long) for m in modalities}
    for i, (item, offset) in enumerate(zip(batch, offsets, strict=True)):
        for m, start in item["placeholders"].items():
            positions[m][i] = torch.arange(offset + start, offset + start + k)
            features[m][i] = item["features"][m]
            present[m][i] = True
    return features, present, positions


def collate(
    batch: Sequence[dict[str, Any]],
    pad_token_id: int = 0,
    padding_side: str = "right",
    pad_to_multiple_of: int = 1,
) -> Batch:
    """Pad items from :func:`make_item` to the longest in the batch, rounded up to a
    multiple of ``pad_to_multiple_of`` (1: exactly the longest).

    ``padding_side="right"`` for training; ``"left"`` for batched generation, so every
    prompt ends at the last column. Slot positions are shifted by the left padding. The
    pad id only fills masked positions (``attention_mask`` 0, label ``IGNORE_INDEX``).
    """
    if not batch:
        raise ValueError("collate: empty batch")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    b = len(batch)
    s = padded_length(max(len(item["input_ids"]) for item in batch), pad_to_multiple_of)
    input_ids = torch.full((b, s), pad_token_id, dtype=torch.long)
    labels = torch.full((b, s), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((b, s), dtype=torch.long)
    offsets = []
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        offset = s - n if padding_side == "left" else 0
        input_ids[row, offset : offset + n] = item["input_ids"]
        labels[row, offset : offset + n] = item["labels"]
        attention_mask[row, offset : offset + n] = 1
        offsets.append(offset)
    return assemble_batch(batch, offsets, input_ids, attention_mask, labels)


def assemble_batch(
    batch: Sequence[dict[str, Any]],
    offsets: Sequence[int],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    sample_rows: torch.Tensor | None = None,
) -> Batch:
    """A :class:`Batch` from laid-out token tensors ([r, s]) and the items' features, item
    i's slots shifted by ``offsets[i]`` (see :func:`batch_features`)."""
    features, present, positions = batch_features(batch, offsets)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        placeholder_positions=positions,
        features=features,
        present=present,
        ids=[item.get("id", "") for item in batch],
        position_ids=position_ids,
        sample_rows=sample_rows,
    )


def _common(batch: Sequence[dict[str, Any]], key: str) -> Any:
    values = {item[key] for item in batch}
    if len(values) != 1:
        raise ValueError(f"collate: items disagree on {key}: {sorted(values)}")
    return values.pop()


def _feature_dim(batch: Sequence[dict[str, Any]], modality: str) -> int:
    dims = {item["features"][modality].numel() for item in batch if modality in item["features"]}
    if len(dims) != 1:
        raise ValueError(f"collate: {modality} features of different sizes {sorted(dims)}")
    return dims.pop()
