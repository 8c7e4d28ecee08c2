"""A bundle's reading heads at prediction time: the cues, the arousal and the emotion head
read from the encoders' features (:mod:`purrsight.models.reading_heads`), and the report
prefix they fix before the LLM writes anything.

A cue is read only from its own input (ears, eyes, tail, posture from an image or video
frame; the vocalization from sound): with that input absent the cue is null, so nothing
downstream can describe what was not seen. A cue whose top value is less likely than the
bundle's ``cue_threshold`` is reported as ``unclear`` rather than guessed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from purrsight.inference.bundle_manifest import ReadingHeadInfo, ReadingInfo
from purrsight.inference.errors import BundleError
from purrsight.models.reading_heads import EmotionBlend, ReadingHeads
from purrsight.report import Evidence

UNCLEAR = "unclear"
CUE_MODALITY = {
    "ears": "image",
    "eyes": "image",
    "tail": "image",
    "posture": "image",
    "vocalization": "audio",
}
"""Which input each evidence cue needs: a cue the model could not perceive is not evidence."""


class HasRaw(Protocol):
    raw: dict[str, torch.Tensor]


@dataclass
class ReadOut:
    """What the heads read from one sample."""

    evidence: Evidence
    arousal: str | None
    cue_confidence: dict[str, float] = field(default_factory=dict)
    """{cue: probability of the reported value} for every cue that was read."""


@dataclass
class Reading:
    """The loaded heads, the emotion blend and the unclear threshold."""

    heads: ReadingHeads
    blend: EmotionBlend
    cue_threshold: float

    def batch(
        self, prepared: Sequence[HasRaw]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """({modality: [b, d_m]} raw features, zero where absent; {modality: [b] bool})."""
        raw, present = {}, {}
        for modality, dim in self.heads.dims.items():
            here = torch.tensor([modality in p.raw for p in prepared], dtype=torch.bool)
            rows = [p.raw.get(modality, torch.zeros(dim)).float().cpu() for p in prepared]
            raw[modality], present[modality] = torch.stack(rows), here
        return raw, present

    def read(self, prepared: Sequence[HasRaw]) -> list[ReadOut]:
        """The cues and arousal of each sample."""
        raw, present = self.batch(prepared)
        answers = self.heads.probabilities(raw, present)
        out = []
        for i in range(len(prepared)):
            cues: dict[str, Any] = {}
            confidence: dict[str, float] = {}
            for cue in CUE_MODALITY:
                value = self._value(answers.get(cue), cue, i)
                if value is not None:
                    cues[cue], confidence[cue] = value
            arousal = self._value(answers.get("arousal"), "arousal", i)
            out.append(ReadOut(Evidence(**cues), arousal[0] if arousal else None, confidence))
        return out

    def _value(self, answer, name: str, i: int) -> tuple[str, float] | None:
        """(value or ``unclear``, its probability) of head ``name`` for sample ``i``; None
        when the head is missing or did not answer (its input absent)."""
        if answer is None or not bool(answer[1][i]):
            return None
        probs = answer[0][i]
        top = int(probs.argmax())
        p = round(float(probs[top]), 4)
        value = self.heads.specs[name].classes[top]
        if name != "arousal" and p < self.cue_threshold:
            value = UNCLEAR
        return value, p


def reading_prefix(emotion: str, read: ReadOut, next_field: str | None) -> str:
    """The answer as training wrote it (compact JSON, fields in order) up to where the LLM
    writes on: the emotion, arousal and evidence are given; with ``next_field`` the text
    ends inside its opening quote (``…,"summary":"``), else it is the whole answer."""
    answer = {
        "emotion": emotion,
        "arousal": read.arousal,
        "evidence": read.evidence.model_dump(),
    }
    text = json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
    return text if next_field is None else f'{text[:-1]},"{next_field}":"'


def load_reading(bundle_path: Path, info: ReadingInfo | None) -> Reading | None:
    """The bundle's reading heads, or None for a bundle exported without them."""
    if info is None:
        return None
    path = Path(bundle_path) / info.file
    if not path.is_file():
        raise BundleError(f"{path}: the reading heads named in purrsight.json are missing")
    heads = ReadingHeads.from_description([h.model_dump() for h in info.heads], info.dims)
    state = load_file(str(path))
    blend = EmotionBlend(info.llm_weight, info.head_weight)
    try:
        heads.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BundleError(f"{path}: does not match purrsight.json's reading heads: {err}") from None
    return Reading(heads.eval(), blend, info.cue_threshold)


def save_reading(
    bundle_dir: Path,
    heads: ReadingHeads,
    blend: EmotionBlend,
    fits: dict[str, dict],
    blend_fit: dict[str, float],
    data: str,
) -> ReadingInfo:
    """Write the heads' weights into the bundle; returns the manifest's ``reading``."""
    info = ReadingInfo(
        dims=heads.dims,
        heads=[ReadingHeadInfo(**d, fit=fits.get(d["name"], {})) for d in heads.describe()],
        llm_weight=float(blend.weights[0]),
        head_weight=float(blend.weights[1]),
        blend_fit=blend_fit,
        data=data,
    )
    state = {k: v.contiguous() for k, v in heads.state_dict().items()}
    save_file(state, str(Path(bundle_dir) / info.file))
    return info
