"""The structured report a trained Purr-Sight model answers with.

The same pydantic model validates the responses written into training data and the
JSON a model generates, so nothing that does not parse is passed on as a report. The
labels, arousal levels and advice are :mod:`purrsight.vocabulary`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from purrsight.vocabulary import AROUSAL_LEVELS, INPUTS, WELFARE_LABELS

# What each default label looks and sounds like; used for zero-shot classification
# in the shared space. Labels outside this table get "The cat is <label>."
LABEL_DESCRIPTIONS: dict[str, str] = {
    "content": "A relaxed, content cat lying calmly with half-closed eyes, purring softly.",
    "playful": "A playful cat, alert and bouncy, pouncing with its tail up and chirping.",
    "curious": "A curious cat with ears forward and wide eyes, exploring and trilling.",
    "demanding": "A demanding cat meowing loudly and insistently for food or attention.",
    "fearful": "A frightened cat crouched low with flattened ears and a puffed tail, hissing.",
    "aggressive": "An aggressive cat with an arched back, bared teeth, growling and hissing.",
    "in_pain": "A cat in pain, hunched and tense with squinted eyes, yowling or moaning.",
}


def label_description(label: str) -> str:
    """A sentence describing ``label``, for zero-shot text prototypes."""
    return LABEL_DESCRIPTIONS.get(label, f"The cat is {label.replace('_', ' ')}.")


Modality = Literal[INPUTS]  # type: ignore[valid-type]  # image, audio, video, text
Arousal = Literal[AROUSAL_LEVELS]  # type: ignore[valid-type]  # low, medium, high


class Alternative(BaseModel):
    """A less likely emotion and its probability."""

    model_config = ConfigDict(extra="forbid")
    emotion: str
    p: float = Field(ge=0.0, le=1.0)


class Evidence(BaseModel):
    """What was seen and heard. A cue that was not observed is null."""

    model_config = ConfigDict(extra="forbid")
    ears: str | None = None
    eyes: str | None = None
    tail: str | None = None
    posture: str | None = None
    vocalization: str | None = None


class Report(BaseModel):
    """One cat's emotional state, with the evidence for it and what to do."""

    model_config = ConfigDict(extra="forbid")
    # Field order is the order a model writes its answer in (ANSWER_FIELDS, the first five):
    # the emotion first, so label scoring reads it straight after the prompt (no evidence
    # prefix the model never wrote) and generation continues from the scored label; the
    # fields after them come from label scoring and the request, never from generated text.
    emotion: str
    arousal: Arousal | None = None
    """None where nothing was generated (label scoring alone reads only the emotion)."""
    evidence: Evidence
    summary: str = ""
    """Empty only in a report parsed from an answer the model was not trained to write it
    in (``answer_fields``); the predictor then composes it from the evidence."""
    advice: str = ""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Label scoring's probability for ``emotion``; None in a report parsed from generated
    text alone (the model does not write numbers: a scorer gives them)."""
    alternatives: list[Alternative] = Field(default_factory=list)
    welfare_alert: bool = False
    modalities: list[Modality] = Field(default_factory=list)
    subject: Literal["cat", "no_cat", "unsure"] | None = None
    """Is there a cat at all (None: a model without the check)? An emotion is given only
    for ``cat``."""
    subject_reason: str = ""
    in_range: bool | None = None
    """Are the inputs like the training data (None: a model without the check)? Out of
    range, the emotion is shown as ``unsure``."""

    @model_validator(mode="after")
    def _welfare_alert_follows_label(self) -> Report:
        # A pain reading must never go out without the alert: the alert is what a
        # user acts on, so it is derived, not trusted from the generator.
        if self.emotion in WELFARE_LABELS:
            self.welfare_alert = True
        return self


# What a model writes, in this order: everything else in a report is derived (confidence
# and alternatives from label scoring, welfare_alert from the label, modalities from the
# request), so training never spends tokens teaching the model to copy them.
ANSWER_FIELDS: tuple[str, ...] = ("emotion", "arousal", "evidence", "summary", "advice")
AnswerField = Literal[ANSWER_FIELDS]  # type: ignore[valid-type]
READING_FIELDS: tuple[str, ...] = ANSWER_FIELDS[:3]
"""What a model writes of the cat: the least a model that writes reports on its own writes.
Label scoring reads the first."""
LABEL_ONLY_FIELDS: tuple[str, ...] = ANSWER_FIELDS[:1]
"""The least any model writes: the emotion, which label scoring reads; the reading heads
of its bundle write the rest."""


def writes_reading(answer_fields: Sequence[str]) -> bool:
    """Whether a model trained on ``answer_fields`` writes its reading (arousal and
    evidence) after the emotion; False for :data:`LABEL_ONLY_FIELDS`, whose bundle's
    reading heads write it."""
    return tuple(answer_fields) != LABEL_ONLY_FIELDS


def answer_json(report: Report, fields: Sequence[str] = ANSWER_FIELDS) -> str:
    """The assistant's answer for ``report``: compact JSON of ``fields`` (in
    :data:`ANSWER_FIELDS` order). On the demo data all five are ~78 SmolLM2 tokens, the
    reading alone ~45; the whole report is ~127."""
    return report.model_dump_json(include=set(fields))


_CUE_PHRASES = {
    "ears": "ears {}",
    "eyes": "eyes {}",
    "tail": "tail {}",
    "posture": "posture {}",
    "vocalization": "sound: {}",
}


def compose_summary(emotion: str, evidence: Evidence) -> str:
    """A summary from the emotion and the cues actually reported (null cues, e.g. of an
    input not given, are never mentioned)."""
    cues = [_CUE_PHRASES[k].format(v) for k, v in evidence.model_dump().items() if v]
    seems = f"The cat seems {emotion.replace('_', ' ')}"
    return f"{seems}: {', '.join(cues)}." if cues else f"{seems}."
