"""The part of a Hugging Face fast tokenizer the inference path uses, on the ``tokenizers``
library alone: importing transformers' tokenizer classes costs about a second, and a
fast tokenizer is a ``tokenizers.Tokenizer`` inside anyway.

What it does (the calls :mod:`purrsight.data.instruction`, the label scoring and the
generation make): ``tok(text, add_special_tokens=False)["input_ids"]``, ``decode(ids,
skip_special_tokens=…)``, ``eos_token`` / ``eos_token_id`` / ``pad_token_id``,
``added_tokens_decoder``, ``all_special_tokens``, and ``apply_chat_template`` for the one
conversation shape a prompt has (system turn, user turn, generation prompt), rendered from
the two pieces the export cut out of the model's own chat template
(:func:`chat_pieces`): ``before + user text + after``. Any other conversation is refused.

:func:`tokenizer_spec` records what a transformers tokenizer does beyond its
``tokenizer.json`` (special tokens, clean-up of spaces, the chat pieces); the export
checks ids, decoded text and rendered prompts against the transformers tokenizer before it
keeps the ready files (:mod:`purrsight.inference.ready_llm`).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

# A string no template or user writes, standing in for the user's text while the template
# is rendered once at export (private-use code points).
USER_MARK = "\ue000purrsight-user\ue001"


def chat_pieces(tokenizer: Any, system_prompt: str) -> dict[str, str]:
    """``{"system_prompt", "before", "after"}`` with ``before + text + after`` equal to the
    transformers rendering of (system ``system_prompt``, user ``text``, generation prompt)
    for any ``text``.

    Raises:
        ValueError: the template transforms the user's text (or drops it), so no pair of
            fixed pieces reproduces it.
    """

    def render(text: str) -> str:
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": text},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    rendered = render(USER_MARK)
    if rendered.count(USER_MARK) != 1:
        raise ValueError("the chat template does not write the user's text exactly once")
    before, after = rendered.split(USER_MARK)
    for probe in ("Image: x\nHow does this cat feel?", " spaced  text \n", ""):
        if render(probe) != before + probe + after:
            raise ValueError("the chat template changes the user's text; cannot cut it in pieces")
    return {"system_prompt": system_prompt, "before": before, "after": after}


def tokenizer_spec(tokenizer: Any, system_prompt: str) -> dict[str, Any]:
    """What :class:`LiteTokenizer` needs besides ``tokenizer.json`` (JSON-ready)."""
    return {
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "all_special_tokens": list(tokenizer.all_special_tokens),
        "added_tokens": {
            str(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
        },
        "clean_up_tokenization_spaces": bool(
            getattr(tokenizer, "clean_up_tokenization_spaces", False)
        ),
        "chat": chat_pieces(tokenizer, system_prompt),
    }


class LiteTokenizer:
    """A ``tokenizers.Tokenizer`` (``tokenizer.json``) with a :func:`tokenizer_spec`."""

    def __init__(self, tokenizer_json: str | Path, spec: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self.spec = spec
        self.eos_token = spec["eos_token"]
        self.pad_token = spec["pad_token"] or spec["eos_token"]
        self.all_special_tokens = list(spec["all_special_tokens"])
        self.added_tokens_decoder = {
            int(i): SimpleNamespace(content=content) for i, content in spec["added_tokens"].items()
        }
        self.clean_up_tokenization_spaces = bool(spec["clean_up_tokenization_spaces"])
        self.chat = dict(spec["chat"])
        self.chat_template = "ready"  # what callers test for: there is a chat format

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def backend_tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` inside (as a transformers fast tokenizer names it;
        constrained decoding builds its token table from it)."""
        return self._tok

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        return {"input_ids": list(ids)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self(text, add_special_tokens=add_special_tokens)["input_ids"]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up(text) if self.clean_up_tokenization_spaces else text

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        **unused: Any,
    ) -> str:
        """The prompt of (system, user) with the generation prompt, from the export's pieces.

        Raises:
            ValueError: any other conversation (an assistant turn, another system prompt,
                no generation prompt, ``tokenize=True``): the transformers tokenizer is
                needed for those (training does not use this class).
        """
        shape_ok = (
            not tokenize
            and add_generation_prompt
            and [m.get("role") for m in messages] == ["system", "user"]
            and messages[0].get("content") == self.chat["system_prompt"]
        )
        if not shape_ok:
            raise ValueError(
                "the ready tokenizer renders only a (system, user) prompt with the bundle's "
                "system prompt and the generation prompt"
            )
        return self.chat["before"] + messages[1]["content"] + self.chat["after"]


def _clean_up(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before punctuation and contractions."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text
