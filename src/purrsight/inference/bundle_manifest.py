"""``purrsight.json``: a bundle's manifest as a typed, validated model.

:class:`BundleManifest` is what ``purrsight export`` writes and what loading a bundle
reads back. Every key is checked on the way in: an unknown key, a missing one or a bad
value is a one-line :class:`~purrsight.inference.errors.BundleError` naming the key. The
inference settings (``inference``, ``media``, ``prompt``, ``generation``) are typed here
with the defaults a bundle without them gets, so readers never restate a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from purrsight.config import (
    EncoderConfig,
    InferenceConfig,
    MediaConfig,
    StrictModel,
    check_answer_fields,
    check_labels_unique,
    describe_error,
)
from purrsight.data.instruction import SYSTEM_PROMPT
from purrsight.files import atomic_write
from purrsight.inference.errors import BundleError
from purrsight.report import ANSWER_FIELDS, AnswerField
from purrsight.vocabulary import DEFAULT_INSTRUCTION, MODALITIES, UNSURE, WELFARE_LABELS

BUNDLE_FORMAT = "purrsight-bundle-v1"
MANIFEST = "purrsight.json"
PROJECTORS_FILE = "projectors.safetensors"
ALIGNER_FILE = "aligner.pt"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LLM_DIR = "llm"
INT8_FILE = "llm_int8.pt"
READY_DIR = "ready"
LlmKind = Literal["adapter", "merged", "int8"]


class ProjectorsInfo(StrictModel):
    file: str = PROJECTORS_FILE
    in_dim: int = Field(gt=0)
    llm_dim: int = Field(gt=0)
    hidden_dim: int = Field(gt=0)


class LlmInfo(StrictModel):
    name: str
    """The base LLM as the config named it (a folder or a model name)."""
    identity: str
    """``llm:<hash>`` over the base LLM's files; an ``adapter`` bundle refuses another."""
    model_type: str
    hidden_size: int = Field(gt=0)
    kind: LlmKind
    """``adapter``: PEFT adapter on the referenced base; ``merged``: ``llm/`` with LoRA
    folded in; ``int8``: ``llm/`` config + tokenizer and ``llm_int8.pt``."""


class LoraInfo(StrictModel):
    r: int = Field(gt=0)
    alpha: int = Field(gt=0)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1)
    merged: bool


class ReadyLlmInfo(StrictModel):
    """The LLM kept ready to memory-map (:mod:`purrsight.inference.ready_llm`): LoRA
    folded in, one safetensors file per compute dtype, and a tokenizer that needs no
    transformers."""

    dir: str = READY_DIR
    files: dict[Literal["bfloat16", "float32"], str] = Field(min_length=1)
    """Compute dtype -> weights file inside ``dir``."""
    tokenizer_file: str = "tokenizer.json"
    config: dict[str, Any]
    """The architecture (:class:`purrsight.models.lite_llm.LiteConfig`)."""
    tokenizer: dict[str, Any]
    """Special tokens and chat pieces (:func:`purrsight.models.lite_tokenizer.tokenizer_spec`)."""


class QuantizationInfo(StrictModel):
    method: str
    skipped: list[str] = Field(default_factory=list)
    """Name suffixes of the Linear layers left in fp32."""
    llm_fp32_mb: float
    llm_int8_mb: float
    bundle_mb: float


class AlignerInfo(StrictModel):
    file: str = ALIGNER_FILE
    sha256: str
    embed_dim: int = Field(gt=0)
    run_name: str | None = None


class EncoderInfo(StrictModel):
    config: EncoderConfig
    identity: str | None = None
    """The identity the aligner was trained on (None: not recorded, not checked)."""


class PromptInfo(StrictModel):
    system_prompt: str = SYSTEM_PROMPT
    instruction: str = DEFAULT_INSTRUCTION
    answer_fields: list[AnswerField] = Field(default_factory=lambda: list(ANSWER_FIELDS))
    """What the model writes; the rest of a report is composed."""

    @field_validator("answer_fields")
    @classmethod
    def _answer_fields_in_order(cls, fields: list[str]) -> list[str]:
        return check_answer_fields(fields)


class GenerationInfo(StrictModel):
    max_new_tokens: int = Field(gt=0)


class SourceInfo(StrictModel):
    checkpoint: str
    checkpoint_sha256: str
    global_step: int = Field(ge=0)
    exported: str
    """UTC time of the export, ISO 8601."""


READING_FILE = "reading_heads.safetensors"


class ReadingHeadInfo(StrictModel):
    """One reading head (:class:`~purrsight.models.reading_heads.HeadSpec`) and its fit."""

    name: str
    inputs: list[str] = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    fit: dict[str, float] = Field(default_factory=dict)
    """Validation macro-F1 and accuracy, the chosen L2, the fitted temperature."""


class ReadingInfo(StrictModel):
    """The reading heads and the emotion blend, fitted at export on the frozen features of
    the training split (heads) and the validation split (L2, temperatures, blend)."""

    file: str = READING_FILE
    dims: dict[str, int]
    """Encoder feature size per modality the heads read."""
    heads: list[ReadingHeadInfo]
    llm_weight: float = Field(ge=0.0)
    head_weight: float = Field(ge=0.0)
    blend_fit: dict[str, float] = Field(default_factory=dict)
    """Validation NLL of the blend, of the temperature-scaled LLM alone, of the head alone."""
    cue_threshold: float = Field(default=0.4, ge=0.0, le=1.0)
    """A cue whose head gives its top value less than this is reported as unclear."""
    data: str = ""
    """The data folder the heads were fitted on."""
    typicality_file: str | None = None
    """How typical inputs are of the training data (None: no subject / range check)."""
    typicality_thresholds: dict[str, float] = Field(default_factory=dict)
    welfare_fit: dict[str, float] = Field(default_factory=dict)
    """Validation precision and recall of the welfare alert at the threshold chosen for it
    (``inference.welfare_threshold``)."""
    """Per modality, the score above which an input is out of range (val's 99th percentile)."""


class BundleManifest(StrictModel):
    """Everything ``purrsight.json`` holds, in the order it is written."""

    format: Literal[BUNDLE_FORMAT] = BUNDLE_FORMAT  # type: ignore[valid-type]
    labels: list[str] = Field(min_length=2)
    unsure_label: str = UNSURE
    welfare_labels: list[str] = Field(default_factory=lambda: sorted(WELFARE_LABELS))
    modalities: list[str] = Field(min_length=1)
    """The modalities the model has projectors for (``image``, ``audio``)."""
    num_soft_tokens: int = Field(ge=1)
    projectors: ProjectorsInfo
    llm: LlmInfo
    lora: LoraInfo
    quantization: QuantizationInfo | None = None
    sizes: dict[str, float] = Field(default_factory=dict)
    aligner: AlignerInfo
    encoders: dict[str, EncoderInfo]
    prompt: PromptInfo = Field(default_factory=PromptInfo)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    generation: GenerationInfo
    max_text_length: int = Field(gt=0)
    source: SourceInfo | None = None
    """The checkpoint exported (None only while the export writes the bundle)."""
    reading: ReadingInfo | None = None
    """The reading heads (None: a bundle of an older export, or exported without data;
    the emotion is the LLM's label scores alone and the evidence is generated)."""
    ready: ReadyLlmInfo | None = None
    """The LLM ready to map (None: a bundle of an older export, or an int8 one; it loads
    through transformers and PEFT, seconds slower)."""

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        return check_labels_unique(labels)

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, modalities: list[str]) -> list[str]:
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown or len(set(modalities)) != len(modalities):
            raise ValueError(f"must be distinct names of {MODALITIES}, got {modalities}")
        return modalities

    @field_validator("encoders")
    @classmethod
    def _known_encoders(cls, encoders: dict[str, EncoderInfo]) -> dict[str, EncoderInfo]:
        unknown = sorted(set(encoders) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; allowed: {MODALITIES}")
        return encoders

    @model_validator(mode="after")
    def _an_encoder_per_modality(self) -> BundleManifest:
        missing = [m for m in self.modalities if m not in self.encoders]
        if missing:
            raise ValueError(f"encoders: no entry for the bundle's modalities {missing}")
        if self.llm.kind == "int8" and self.quantization is None:
            raise ValueError("quantization: an int8 bundle must describe its quantization")
        return self

    def to_json(self) -> str:
        """The text of ``purrsight.json``."""
        data = self.model_dump(mode="json")
        for key in ("reading", "ready"):  # a bundle without them reads as before
            if data.get(key) is None:
                data.pop(key, None)
        return json.dumps(data, indent=2) + "\n"


def read_manifest(folder: str | Path) -> BundleManifest:
    """``purrsight.json`` of the bundle folder ``folder``, validated.

    Raises:
        BundleError: no manifest (with a hint when ``folder`` is a checkpoint), not JSON,
            another format, or a key that is unknown, missing or wrong (named).
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        hint = (
            "; this is a training checkpoint: `purrsight export --checkpoint "
            f"{folder} --out <bundle>` makes a bundle from it"
            if folder.suffix == ".ckpt"
            else "; make one with `purrsight export --checkpoint <ckpt> --out <bundle>`"
        )
        raise BundleError(f"{folder}: not a Purr-Sight bundle ({MANIFEST} missing){hint}")
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{manifest}: not valid JSON ({err})") from None
    return parse_manifest(info, manifest)


def parse_manifest(info: Any, where: str | Path = MANIFEST) -> BundleManifest:
    """``info`` (a parsed ``purrsight.json``) as a :class:`BundleManifest`; ``where``
    names it in a :class:`BundleError`."""
    if not isinstance(info, dict):
        raise BundleError(f"{where}: the top level must be a JSON object")
    if info.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{where}: format {info.get('format')!r}, this version reads {BUNDLE_FORMAT!r}"
        )
    try:
        return BundleManifest.model_validate(info)
    except ValidationError as err:
        raise BundleError(f"{where}: {describe_error(err, BundleManifest)}") from None


def write_manifest(folder: Path, manifest: BundleManifest) -> Path:
    """Write ``purrsight.json`` into ``folder`` (atomically); returns its path."""
    return atomic_write(folder / MANIFEST, manifest.to_json())
