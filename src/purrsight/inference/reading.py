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
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from purrsight.inference.bundle_manifest import ReadingHeadInfo, ReadingInfo
from purrsight.inference.errors import BundleError
from purrsight.models.reading_heads import EmotionBlend, ReadingHeads
from purrsight.models.typicality import Typicality
from purrsight.report import Evidence
from purrsight.vocabulary import given_inputs

UNCLEAR = "unclear"
TYPICALITY_FILE = "typicality.safetensors"
CUE_MODALITY = {
    "ears": "image",
    "eyes": "image",
    "tail": "image",
    "posture": "image",
    "vocalization": "audio",
}
"""Which input each evidence cue needs: a cue the model could not perceive is not evidence."""
DOMESTIC_CAT_CLASSES = range(281, 286)
"""ImageNet-1k: tabby, tiger cat, Persian, Siamese, Egyptian cat."""
BIG_CAT_CLASSES = range(286, 294)
"""ImageNet-1k: cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah."""
CAT_SEEN = 0.5
"""A photo whose domestic-cat classes hold at least this much is a cat, in range or not."""
NO_CAT = 0.1
"""A photo out of range whose cat classes (domestic and big) hold less than this: no cat."""


@dataclass
class Verdict:
    """Is there a cat, and are the inputs like the training data?"""

    subject: str
    """``cat``, ``no_cat`` or ``unsure``."""
    reason: str
    in_range: bool
    typicality: dict[str, float] = field(default_factory=dict)
    """{modality: score / threshold}: at most 1 is in range."""


def judge(
    in_range: dict[str, tuple[float, bool]],
    cat_probability: tuple[float, float] | None,
) -> Verdict:
    """The verdict of one request from each given input's typicality (``{modality:
    (ratio, in range)}``) and, for a photo, the image classifier's (domestic cat, big cat)
    probability. The drawn cats of the demo score under 0.01 as ImageNet cats but are in
    range; a real cat photo scores high whatever its range; a photo out of range that the
    classifier sees no cat in is ``no_cat``; a sound alone can only be in range (``cat``)
    or not (``unsure``): nothing else tells a cat's sound from another here."""
    ratios = {m: round(r, 3) for m, (r, _) in in_range.items()}
    typical = all(ok for _, ok in in_range.values())
    image = in_range.get("image")
    if cat_probability is not None and cat_probability[0] >= CAT_SEEN:
        reason = f"the photo shows a cat (image classifier: {cat_probability[0]:.2f})"
        return Verdict("cat", reason, typical, ratios)
    if typical:
        return Verdict("cat", "like the cats it was trained on", True, ratios)
    photo_far = image is not None and not image[1]
    if photo_far and cat_probability is not None and sum(cat_probability) < NO_CAT:
        reason = (
            "no cat in the photo: it is unlike the training photos and the image "
            f"classifier gives cats {sum(cat_probability):.2f}"
        )
        return Verdict("no_cat", reason, False, ratios)
    far = [m for m, (_, ok) in in_range.items() if not ok]
    reason = f"the {' and '.join(far)} is unlike anything it was trained on"
    return Verdict("unsure", reason, False, ratios)


def cat_probability(imagenet_logits: torch.Tensor) -> tuple[float, float]:
    """(domestic cat, big cat) probability of ``[1000]`` ImageNet logits."""
    probs = imagenet_logits.float().softmax(dim=-1)
    domestic = float(probs[DOMESTIC_CAT_CLASSES.start : DOMESTIC_CAT_CLASSES.stop].sum())
    big = float(probs[BIG_CAT_CLASSES.start : BIG_CAT_CLASSES.stop].sum())
    return domestic, big


class HasRaw(Protocol):
    raw: dict[str, torch.Tensor]
    cat_probability: tuple[float, float] | None


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
    typicality: Typicality | None = None

    def verdicts(self, prepared: Sequence[HasRaw]) -> list[Verdict | None]:
        """:func:`judge` of each request (None each without a typicality model)."""
        if self.typicality is None:
            return [None] * len(prepared)
        raw, present = self.batch(prepared)
        scores = self.typicality.in_range(raw, present)
        out = []
        for i, p in enumerate(prepared):
            given = {
                m: (float(scores[m][0][i]), bool(scores[m][1][i]))
                for m in scores
                if bool(present[m][i])
            }
            out.append(judge(given, getattr(p, "cat_probability", None)))
        return out

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


CUE_WORDS = {
    "image": ("ear", "eye", "tail", "posture", "crouch", "arched", "hunched", "lying", "standing"),
    "audio": (
        "meow",
        "purr",
        "hiss",
        "growl",
        "yowl",
        "chirp",
        "trill",
        "vocali",
    ),
}
"""Words that describe what only an input of that kind can show (lower case stems)."""


def absent_cue_words(text: str, given: Sequence[str]) -> list[str]:
    """The cue words in ``text`` that need an input not ``given`` (``image`` also counts
    as given for a video, ``audio`` too)."""
    seen = given_inputs(given)
    lowered = text.lower().replace("purr-sight", "")  # the product's name is no cue
    return [
        word
        for modality, words in CUE_WORDS.items()
        if modality not in seen
        for word in words
        if re.search(rf"\b{word}", lowered)  # a word that starts so: "ears", not "clearer"
    ]


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
    typicality = None
    if info.typicality_file:
        typicality = Typicality(info.dims)
        typicality.load_state_dict(load_file(str(Path(bundle_path) / info.typicality_file)))
    return Reading(heads.eval(), blend, info.cue_threshold, typicality)


def save_reading(
    bundle_dir: Path,
    heads: ReadingHeads,
    blend: EmotionBlend,
    fits: dict[str, dict],
    blend_fit: dict[str, float],
    data: str,
    typicality: Typicality | None = None,
) -> ReadingInfo:
    """Write the heads' weights (and the typicality model) into the bundle; returns the
    manifest's ``reading``."""
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
    if typicality is not None:
        info.typicality_file = TYPICALITY_FILE
        info.typicality_thresholds = {m: float(t.threshold) for m, t in typicality.items()}
        state = {k: v.contiguous() for k, v in typicality.state_dict().items()}
        save_file(state, str(Path(bundle_dir) / TYPICALITY_FILE))
    return info
