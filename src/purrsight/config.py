"""Typed configuration: YAML files under ``config/`` plus ``--set a.b=value`` overrides.

The top level carries the seed guide's flat Phase 2 keys (``batch_size``, ``lora_r``, …)
exactly as the guide shows them; the frozen encoders, media limits, Phase 1 and MLflow
have their own sections. Every model refuses unknown keys, and every problem surfaces as
one :class:`ConfigError` line that names the key and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from purrsight.report import ANSWER_FIELDS, LABEL_ONLY_FIELDS, READING_FIELDS, AnswerField
from purrsight.vocabulary import DEFAULT_INSTRUCTION, DEFAULT_LABELS


class ConfigError(ValueError):
    """A configuration problem, already phrased as one line for the user."""


class StrictModel(BaseModel):
    """Every typed file of the project (this config, a bundle's ``purrsight.json``):
    unknown keys are refused, assignments validated."""

    # allow_inf_nan=False: no key means anything at inf or nan, and an inf limit would
    # overflow where it is used (e.g. seconds × sample rate) instead of failing here.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


ImageEncoderType = Literal["efficientnet_lite0", "hf"]
AudioEncoderType = Literal["aisfx", "hf"]
TextEncoderType = Literal["minilm", "hf"]


class EncoderConfig(StrictModel):
    """One frozen encoder. Built-in types load weights shipped inside registry packages;
    ``hf`` loads any model from a local Hugging Face folder given as ``path``."""

    type: str
    path: str | None = None
    """Local folder (``hf``), or a weights file replacing the packaged one (built-ins)."""
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    """How an ``hf`` encoder turns its hidden states into one vector."""
    max_length: int = Field(default=128, gt=0, le=4096)
    """Longest text in tokens (text encoders)."""

    @model_validator(mode="after")
    def _hf_needs_path(self) -> EncoderConfig:
        if self.type == "hf" and not self.path:
            raise ValueError("type 'hf' needs 'path': the local Hugging Face model folder")
        return self


class ImageEncoderConfig(EncoderConfig):
    type: ImageEncoderType = "efficientnet_lite0"


class AudioEncoderConfig(EncoderConfig):
    type: AudioEncoderType = "aisfx"


class TextEncoderConfig(EncoderConfig):
    type: TextEncoderType = "minilm"


class EncodersConfig(StrictModel):
    image: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    audio: AudioEncoderConfig = Field(default_factory=AudioEncoderConfig)
    text: TextEncoderConfig = Field(default_factory=TextEncoderConfig)


class MediaConfig(StrictModel):
    """Limits applied when decoding media, so one bad file cannot take all memory."""

    max_image_pixels: int = Field(default=40_000_000, gt=0)
    max_audio_seconds: float = Field(default=30.0, gt=0)
    max_file_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    max_video_seconds: float = Field(default=60.0, gt=0)
    """Longest video accepted (training, predict, serve): frames sampled, audio used."""


class InferenceConfig(StrictModel):
    """How a trained model answers (``purrsight export`` copies this into the bundle;
    ``predict`` / ``evaluate`` read it from there)."""

    instruction: str = Field(default=DEFAULT_INSTRUCTION, min_length=1, max_length=500)
    """The user turn's question when the caller gives none."""
    unsure_threshold: float = Field(default=0.4, ge=0.0, lt=1.0)
    """Below this label probability the report's emotion is ``unsure``."""
    welfare_threshold: float = Field(default=0.3, gt=0.0, le=1.0)
    """Welfare labels (in_pain) together at least this likely set ``welfare_alert``."""
    video_frames: int = Field(default=8, ge=1, le=64)
    """Frames sampled evenly from a video; their aligned image features are averaged."""
    max_text_chars: int = Field(default=500, gt=0)
    """Longest user text (the question in the prompt) accepted."""


class MlflowConfig(StrictModel):
    tracking_uri: str = "outputs/mlruns"
    """A folder (a SQLite store ``mlflow.db`` is made inside it) or any MLflow URI."""
    experiment_name: str = "purrsight"
    enabled: bool = True


class Phase1Config(StrictModel):
    """Contrastive alignment of the frozen encoders' features into one shared space."""

    data_dir: str = "data/demo"
    """Folder with train.jsonl and val.jsonl."""
    output_dir: str = "checkpoints/alignment"
    """Each run writes ``<output_dir>/<run>/aligner.pt`` and ``aligner.json``."""
    run_name: str | None = None
    embed_dim: int = Field(default=512, gt=0)
    head_hidden_dim: int = Field(default=1024, gt=0)
    head_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    temperature_init: float = Field(default=0.07, gt=0.0, le=1.0)
    batch_size: int = Field(default=64, ge=2)
    epochs: int = Field(default=30, gt=0)
    learning_rate: float = Field(default=5e-4, gt=0.0)
    weight_decay: float = Field(default=0.1, ge=0.0)
    warmup_steps: int = Field(default=20, ge=0)
    encode_batch_size: int = Field(default=16, gt=0)
    """Batch size of the one pass through the frozen encoders."""
    seed: int = 0


class DemoConfig(StrictModel):
    """The main job (``make demo``): demo data, then each stage, then a summary."""

    n: int = Field(default=420, ge=14)
    """Samples to generate (at least 2 per default label)."""
    seed: int = 0
    subjects_per_label: int = Field(default=4, ge=1)
    """Synthetic cats per label (the data set has this times the labels; splits are
    grouped by cat, so val and test see cats that training never saw)."""
    split: list[float] = Field(default_factory=lambda: [0.7, 0.15, 0.15])
    """Shares of train, val and test (of the samples and of the cats)."""
    summary_path: str = "outputs/demo/summary.json"

    @field_validator("split")
    @classmethod
    def _three_positive_shares(cls, shares: list[float]) -> list[float]:
        if len(shares) != 3 or min(shares) <= 0:
            raise ValueError(f"must be 3 positive shares [train, val, test], got {shares}")
        return shares


class Config(StrictModel):
    """The whole configuration. Top-level keys are the seed guide's Phase 2 keys."""

    # --- the guide's keys (Phase 2) ---
    phase1_checkpoint_path: str = "checkpoints/alignment/*/aligner.pt"
    llm_model_name: str = "models/Qwen2.5-0.5B-Instruct"
    batch_size: int = Field(default=8, gt=0)
    num_epochs: int = Field(default=10, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_steps: int = Field(default=500, ge=0)
    lora_r: int = Field(default=16, gt=0)
    lora_alpha: int = Field(default=32, gt=0)
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj", "k_proj", "o_proj"], min_length=1
    )
    data_dir: str = "data/instruction"
    max_text_length: int = Field(default=512, gt=0)
    num_workers: int = Field(default=4, ge=0)

    # --- Phase 2 training beyond the guide's keys ---
    answer_fields: list[AnswerField] = Field(default_factory=lambda: list(ANSWER_FIELDS))
    """What the model learns to write of each report, in this order: at least
    ``[emotion, arousal, evidence]`` (its reading of the cat; label scoring reads the first,
    the emotion). Leave out ``summary`` and ``advice`` to have them composed from the reading at
    prediction (the evidence's cues, the advice table): ~45 instead of ~78 answer tokens
    on the demo data, so each step is cheaper and the loss rests on the reading.
    ``[emotion]`` alone (~8 tokens) teaches the LLM only what label scoring reads; the
    bundle's reading heads then write arousal and evidence, so a report needs them
    (``purrsight export`` fits them by default). Measured on the demo (bf16, one seed):
    1.45 instead of 2.6 s a step, the LLM's own macro-F1 0.61 instead of 0.41."""
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    """Lightning precision. ``auto``: ``bf16-mixed`` where the device computes bf16
    natively (a CUDA GPU with bf16, a CPU with avx512_bf16 or amx_bf16), else ``32``
    (emulated bf16 is ~10-100x slower than fp32); see :mod:`purrsight.precision`.
    ``16-mixed`` needs a CUDA GPU; runs record the resolved value, never ``auto``."""
    gradient_checkpointing: bool = False
    """Recompute the LLM's activations in backward: less memory, ~30 % more time."""
    group_by_length: bool = False
    """Train batches of similar-length samples (shuffled by seed and epoch), so padding to
    the longest in the batch wastes little; false (default): a plain seeded shuffle. Off by
    default: where response length follows the label (the demo's reports do), grouped
    batches hold one label each and the model learns worse (demo test macro-F1 0.357 with
    it, 0.548 without, label scoring, same everything else)."""
    pad_to_multiple_of: int = Field(default=16, ge=1)
    """Batches are padded to the longest sample rounded up to this (1: exactly the longest).
    Each new batch length costs CPU memory that is never given back (oneDNN builds and
    keeps kernels per shape; measured ~20 MB per new length with SmolLM2, so ~1 GB over
    the demo's ~50 lengths); 16 leaves a few lengths for ~4 % more padded tokens."""
    packing: bool = False
    """Pack each batch's samples into shared rows no longer than its longest sample
    (first fit, longest first; each sample attends only to itself), so short samples
    stop paying for padding. The batches and their loss are unchanged. Pays where a batch
    mixes samples under half its longest; the demo's (185-246 tokens) never pair up."""
    accumulate_grad_batches: int = Field(default=1, ge=1)
    """Batches whose gradients are summed before each optimizer step."""
    num_soft_tokens: int = Field(default=4, ge=1)
    """LLM input tokens each modality's projector emits."""
    projector_hidden_dim: int | None = Field(default=None, gt=0)
    """Hidden size of the projectors' Linear–GELU–Linear (None: the LLM's hidden size)."""
    save_top_k: int = Field(default=3, ge=-1)
    """Epoch checkpoints kept, best by train loss (-1: all, 0: only last.ckpt)."""
    max_steps: int = Field(default=-1, ge=-1)
    """Stop after this many optimizer steps (-1: run num_epochs); the LR schedule ends here."""
    log_every_n_steps: int = Field(default=5, ge=1)
    """How often step metrics go to MLflow and a progress line to training.log."""
    gradient_clip_val: float | None = Field(default=1.0, gt=0.0)
    """Clip the gradient norm to this value (None: no clipping)."""
    max_new_tokens: int = Field(default=256, gt=0)
    """Longest generated report in tokens (previews after training, the demo, predict)."""
    preview_samples: int = Field(default=1, ge=0)
    """Val samples (train if no val) answered and logged after training (0: none)."""

    # --- faults and bad data (Phase 1 and 2) ---
    on_bad_sample: Literal["error", "skip"] = "error"
    """A training sample that cannot be used (bad JSONL line, missing or undecodable
    media): ``error`` stops at the first one, naming ``file:line`` and why; ``skip`` leaves
    it out and logs each one (console, ``skipped_samples.jsonl``, MLflow)."""
    max_nonfinite_steps: int = Field(default=5, ge=1)
    """Phase 2 batches in a row with a NaN/inf loss (each skipped, no update) before the
    run stops with an emergency checkpoint."""

    # --- the feature cache (Phase 1 and 2) ---
    feature_cache: bool = False
    """Keep the frozen encoders' and aligner's features on disk, keyed by content hash and
    model identity, and reuse them; with a full cache Phase 2 never loads the encoders."""
    feature_cache_dir: str = "cache/features"
    """Where the feature cache lives (shared by every config that uses the same models)."""

    # --- everything else ---
    seed: int = 42
    output_dir: str = "outputs"
    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS), min_length=2)
    encoders: EncodersConfig = Field(default_factory=EncodersConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    phase1: Phase1Config = Field(default_factory=Phase1Config)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @field_validator("answer_fields")
    @classmethod
    def _answer_fields_in_order(cls, fields: list[str]) -> list[str]:
        return check_answer_fields(fields)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        return check_labels_unique(labels)

    @field_validator("learning_rate", "weight_decay", "lora_dropout", "gradient_clip_val")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("feature_cache_dir")
    @classmethod
    def _cache_dir_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder, e.g. cache/features")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML and --set read `precision: 32` as the integer 32; Lightning's name is "32".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def check_labels_unique(labels: list[str]) -> list[str]:
    """``labels`` if no label appears twice, else ValueError."""
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    return labels


def check_answer_fields(fields: list[str]) -> list[str]:
    """``fields`` if a model may be trained to write them (``answer_fields``), else
    ValueError: ``[emotion]`` alone (the reading heads write the rest), or the reading
    first, then any of the rest, once each, in order."""
    if fields == list(LABEL_ONLY_FIELDS):
        return fields
    if len(fields) < 3 or fields[:3] != list(READING_FIELDS):
        raise ValueError(
            f"must be {list(LABEL_ONLY_FIELDS)} (the emotion alone; the reading heads write "
            f"the rest) or start with {list(READING_FIELDS)} (what the model reads from the cat)"
        )
    order = [f for f in ANSWER_FIELDS if f in fields]
    if fields != order or len(set(fields)) != len(fields):
        raise ValueError(f"must list fields once each, in the order {list(ANSWER_FIELDS)}")
    return fields


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``a.b=value``
    overrides. Raises :class:`ConfigError` with one line that names the key."""
    source = str(path) if path is not None else "<defaults>"
    raw = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_nested(raw, key, value, source)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_error(err)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set phase1.epochs=5")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_nested(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    node = raw
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{source}: --set {dotted}: '{where}' is not a section")
        node = child
    node[parts[-1]] = value


def describe_error(err: ValidationError, model: type[BaseModel] = Config) -> str:
    """The first validation error of ``model`` as one line, 'key: problem (got value)'
    (``key`` dotted, e.g. ``phase1.epochs``), or 'unknown key …; allowed here: …'."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc) or "<top level>"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        return f"unknown key '{key}'" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "finite_number":  # the same words as the validators' own check
        message = "must be a finite number"
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{key}: {message}{shown}"


def _allowed_keys(model: type[BaseModel], section: list[str]) -> list[str]:
    """The keys ``model`` allows at ``section`` (field names, and the keys of a dict of
    models), or [] where that is not a model."""
    node: Any = model
    for part in section:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            node = field.annotation if field else None
        elif get_origin(node) is dict:
            node = get_args(node)[1]  # ``part`` is a key of the dict
        else:
            return []
        models = [a for a in get_args(node) if a is not type(None)]
        if get_origin(node) in (Union, UnionType) and len(models) == 1:
            node = models[0]  # an optional section
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def to_flat_dict(config: Config) -> dict[str, Any]:
    """The config as ``{"a.b": value}``, for logging as MLflow params."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = node

    walk("", config.model_dump())
    return flat


def dump_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML (the artifact logged with every run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False), encoding="utf-8")
