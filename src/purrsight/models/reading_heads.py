"""Reading heads: calibrated linear classifiers on the frozen encoders' features, one per
thing a report reads from the cat (the emotion, the arousal, each cue).

The frozen features hold the cues (linear probes read ears, tail and posture at 0.8-0.95
on the demo data) while the LLM, reading them through a few soft tokens, reported them
at chance. A head per cue reads them where they are; the report's evidence is the heads'
answer, and the emotion combines the LLM's label scores with the emotion head's
(:class:`EmotionBlend`). A head is a standardised multinomial logistic regression with a
temperature; a sample without the head's input modality gets no answer (None).

The emotion head is stacked on the others: it reads the cue and arousal heads'
probabilities (zeros for a cue whose input is absent) and one presence flag per
modality, the way the cues explain the emotion (a classifier on the true cues reaches
macro-F1 0.88 on the demo data, one on the raw features 0.71).

Shapes: b = samples, d = the head's input size (its modalities' feature sizes joined, plus
one presence flag per modality for a head on several), c = the head's classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from purrsight.vocabulary import MEDIA_MODALITIES

EMOTION = "emotion"


@dataclass(frozen=True)
class HeadSpec:
    """What one head reads from and answers with."""

    name: str
    """``emotion``, ``arousal`` or a cue (``ears``, ``eyes``, ``tail``, ``posture``,
    ``vocalization``)."""
    inputs: tuple[str, ...]
    """The modalities it reads; with one, it answers only samples that have it; with
    several, any sample that has at least one (absent ones are zeros + a flag)."""
    classes: tuple[str, ...]


def head_input(
    spec: HeadSpec,
    raw: Mapping[str, torch.Tensor],
    present: Mapping[str, torch.Tensor],
    dims: Mapping[str, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input rows and which samples it answers.

    Args:
        raw: {modality: [b, d_m]} encoder features (any rows where absent).
        present: {modality: [b] bool}.
        dims: {modality: d_m}, for modalities missing from ``raw`` altogether.
    Returns:
        ([b, d] float32 inputs, [b] bool answered).
    """
    b = next(iter(present.values())).shape[0]
    parts, answered = [], torch.zeros(b, dtype=torch.bool)
    for modality in spec.inputs:
        here = present.get(modality, torch.zeros(b, dtype=torch.bool)).bool()
        x = raw.get(modality)
        x = torch.zeros(b, dims[modality]) if x is None else x.float()
        parts.append(x * here[:, None])
        if len(spec.inputs) > 1:
            parts.append(here[:, None].float())
        answered |= here
    return torch.cat(parts, dim=1), answered


class LinearHead(nn.Module):
    """softmax((standardised x) W^T + b) / T: [b, d] -> [b, c] logits."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, n_classes)
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, d] -> [b, c] calibrated logits (divided by the temperature)."""
        return self.linear((x - self.mean) / self.scale) / self.temperature


class ReadingHeads(nn.Module):
    """The heads of one bundle, with their specs and the encoders' feature sizes."""

    def __init__(self, specs: Sequence[HeadSpec], dims: Mapping[str, int]) -> None:
        super().__init__()
        unknown = {m for s in specs for m in s.inputs} - set(MEDIA_MODALITIES)
        if unknown:
            raise ValueError(f"reading heads read only {MEDIA_MODALITIES}, not {sorted(unknown)}")
        self.specs = {s.name: s for s in specs}
        self.dims = dict(dims)
        self.heads = nn.ModuleDict(
            {s.name: LinearHead(self.in_dim(s), len(s.classes)) for s in specs}
        )

    @property
    def reading_names(self) -> list[str]:
        """The heads the emotion head stacks on (all but the emotion), in order."""
        return [name for name in self.specs if name != EMOTION]

    def in_dim(self, spec: HeadSpec) -> int:
        if spec.name == EMOTION:
            classes = sum(len(self.specs[n].classes) for n in self.reading_names)
            return classes + len(self.dims)
        flags = len(spec.inputs) if len(spec.inputs) > 1 else 0
        return sum(self.dims[m] for m in spec.inputs) + flags

    @torch.no_grad()
    def stack_input(
        self, raw: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """[b, D] the emotion head's input: every other head's probabilities (zeros where
        it did not answer) and a presence flag per modality."""
        parts = []
        for name in self.reading_names:
            x, answered = head_input(self.specs[name], raw, present, self.dims)
            parts.append(self.heads[name](x).softmax(dim=-1) * answered[:, None])
        b = next(iter(present.values())).shape[0]
        for modality in self.dims:
            parts.append(present.get(modality, torch.zeros(b, dtype=torch.bool)).float()[:, None])
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def probabilities(
        self, raw: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{head: ([b, c] probabilities, [b] answered)} for a batch of raw features."""
        out = {}
        for name in self.specs:
            logits, answered = self._logits(name, raw, present)
            out[name] = (logits.softmax(dim=-1), answered)
        return out

    def _logits(self, name, raw, present) -> tuple[torch.Tensor, torch.Tensor]:
        if name == EMOTION:
            x = self.stack_input(raw, present)
            return self.heads[name](x), x[:, -len(self.dims) :].bool().any(dim=1)
        x, answered = head_input(self.specs[name], raw, present, self.dims)
        return self.heads[name](x), answered

    @torch.no_grad()
    def logits(
        self, name: str, raw: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """[b, c] calibrated logits of one head."""
        return self._logits(name, raw, present)[0]

    def describe(self) -> list[dict]:
        """JSON-ready specs (for the bundle's manifest)."""
        return [
            {"name": s.name, "inputs": list(s.inputs), "classes": list(s.classes)}
            for s in self.specs.values()
        ]

    @classmethod
    def from_description(cls, specs: Sequence[dict], dims: Mapping[str, int]) -> ReadingHeads:
        return cls(
            [HeadSpec(d["name"], tuple(d["inputs"]), tuple(d["classes"])) for d in specs], dims
        )


class EmotionBlend(nn.Module):
    """The emotion's probabilities from two scorers: softmax(a * llm + b * head), where
    ``llm`` are the LLM's label log-likelihoods and ``head`` the emotion head's logits,
    both [b, L]. ``a`` and ``b`` are fitted together on the validation split (minimum
    NLL), which both weighs the two and calibrates the result: a = 1/T, b = 0 is plain
    temperature scaling of the LLM."""

    def __init__(self, llm_weight: float = 1.0, head_weight: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor([llm_weight, head_weight]))

    @torch.no_grad()
    def forward(self, llm: torch.Tensor, head: torch.Tensor | None) -> torch.Tensor:
        """[b, L] probabilities; a row without a head answer uses the LLM's term alone."""
        logits = self.weights[0] * llm
        if head is not None:
            logits = logits + self.weights[1] * head
        return logits.softmax(dim=-1)
