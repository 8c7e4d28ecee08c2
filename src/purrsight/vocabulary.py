"""The project's words, defined once: modalities, labels, arousal levels, the default
instruction and the advice table. Every other module imports them from here.

Pure Python (no torch, no pydantic): the demo data generator, the report schema, the
config and the web server all read it.
"""

from __future__ import annotations

from collections.abc import Iterable

# ----------------------------------------------------------------------------- modalities

MODALITIES: tuple[str, ...] = ("image", "audio", "text")
"""What the frozen encoders read and the aligner maps into one shared space, in prompt
order. Every other list of modalities is a named subset of this one."""
IMAGE, AUDIO, TEXT = MODALITIES
MEDIA_MODALITIES: tuple[str, ...] = (IMAGE, AUDIO)
"""The modalities perceived from media files; Phase 2's soft-prompt slots."""
VIDEO = "video"
"""Not a modality of its own: a video gives its frames as the image, its sound as the audio."""
MEDIA_FIELDS: tuple[str, ...] = (*MEDIA_MODALITIES, VIDEO)
"""The media files a sample (JSONL) or a request (predict, the server) may give."""
INPUTS: tuple[str, ...] = (*MEDIA_FIELDS, TEXT)
"""What a request may give, and what a report lists as its ``modalities``."""


def given_inputs(modalities: Iterable[str]) -> set[str]:
    """The perceived inputs of a request: a video gives an image and a sound."""
    given = set(modalities)
    return given | ({IMAGE, AUDIO} if VIDEO in given else set())


# ----------------------------------------------------------------------------- labels

DEFAULT_LABELS: tuple[str, ...] = (
    "content",
    "playful",
    "curious",
    "demanding",
    "fearful",
    "aggressive",
    "in_pain",
)
WELFARE_LABELS: frozenset[str] = frozenset({"in_pain"})
"""Labels that call for a welfare alert: the report then advises a vet."""
UNSURE = "unsure"
"""The emotion a report gives when no label is likely enough (the predictor's confidence
threshold); it is never a training label, and the alternatives then list the candidates."""

# ----------------------------------------------------------------------------- prompts

DEFAULT_INSTRUCTION = "How does this cat feel?"
"""The user turn's question when none is given (training samples, predict, the server)."""
IMAGE_INSTRUCTION = "Look at this cat. How is it feeling?"
AUDIO_INSTRUCTION = "Listen to this cat. What is it feeling?"

# ----------------------------------------------------------------------------- arousal

AROUSAL_LEVELS: tuple[str, ...] = ("low", "medium", "high")
LABEL_AROUSAL: dict[str, str] = {
    "content": "low",
    "playful": "high",
    "curious": "medium",
    "demanding": "medium",
    "fearful": "high",
    "aggressive": "high",
    "in_pain": "low",
}
"""How aroused a cat with each default label is, before any cue moves it."""
DEFAULT_AROUSAL = "medium"


def label_arousal(label: str) -> str:
    """The arousal of ``label`` (:data:`DEFAULT_AROUSAL` outside the default labels)."""
    return LABEL_AROUSAL.get(label, DEFAULT_AROUSAL)


# ----------------------------------------------------------------------------- advice

ADVICE: dict[str, tuple[str, ...]] = {
    "content": (
        "No action needed; let it rest.",
        "Keep the surroundings calm; this is a happy cat.",
    ),
    "playful": (
        "Offer a wand toy or a ball to play with.",
        "A good moment for an interactive play session.",
    ),
    "curious": (
        "Let it explore safely and keep hazards out of reach.",
        "Give it time to investigate at its own pace.",
    ),
    "demanding": (
        "Check its food, water and litter box; it may also want attention.",
        "Respond to its needs, but do not reward constant meowing with treats.",
    ),
    "fearful": (
        "Give it space and a hiding place; do not reach for it.",
        "Remove the source of fear and let it calm down on its own.",
    ),
    "aggressive": (
        "Keep your distance and do not touch it until it calms down.",
        "Do not punish it; remove the trigger and give it space.",
    ),
    "in_pain": (
        "Contact a vet: signs of pain should be checked promptly.",
        "Handle it gently and book a vet visit soon.",
    ),
}
"""What to do, per default label: the demo data draws one of each label's texts for its
training answers; imported data and reports built from label scores alone use the first."""
GENERIC_ADVICE = "Watch the cat and give it what it seems to need."
"""The advice for a label outside the default set."""
VET_ADVICE = "Possible pain or distress: have a vet check the cat soon."
"""Put first in a report with a welfare alert (unless its advice names a vet already)."""


def label_advice(label: str) -> str:
    """The advice for ``label``: its first text in :data:`ADVICE`, else GENERIC_ADVICE."""
    texts = ADVICE.get(label)
    return texts[0] if texts else GENERIC_ADVICE
