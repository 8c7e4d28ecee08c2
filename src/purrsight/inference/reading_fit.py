"""Fitting the reading heads (:mod:`purrsight.models.reading_heads`) on frozen features:
multinomial logistic regression by L-BFGS, its L2 strength chosen on the validation split,
then a temperature fitted on it; and the emotion blend of the LLM's label scores with the
emotion head's. Everything is torch + numpy and takes seconds on a CPU.

Shapes: n = samples, d = input size, c = classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from purrsight.inference.calibration import fit_temperature
from purrsight.inference.metrics import classification_metrics
from purrsight.models.reading_heads import EmotionBlend, HeadSpec, LinearHead

log = logging.getLogger(__name__)

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Weight-decay strengths tried (per sample, on standardised inputs)."""
MIN_SAMPLES = 2


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, iterations: int = 100
) -> LinearHead:
    """A :class:`LinearHead` minimising mean cross-entropy + ``l2``/2 * ||W||^2 on
    ``x`` [n, d] (standardised inside) and ``y`` [n] class indices; temperature 1."""
    head = LinearHead(x.shape[1], n_classes)
    mean, scale = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    head.mean.copy_(mean)
    head.scale.copy_(scale)
    z = (x - mean) / scale
    weight = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        head.linear.weight.copy_(weight)
        head.linear.bias.copy_(bias)
    return head


def fit_head(
    spec: HeadSpec,
    train: tuple[torch.Tensor, Sequence[str]],
    val: tuple[torch.Tensor, Sequence[str]],
) -> tuple[LinearHead, dict]:
    """The head of ``spec`` fitted on ``train`` (x [n, d], class names), its L2 the one of
    :data:`L2_GRID` with the best val macro-F1 (ties: the stronger), its temperature
    fitted on val. Returns (head, {"l2", "val_macro_f1", "val_accuracy", "temperature"})."""
    classes = list(spec.classes)
    index = {c: i for i, c in enumerate(classes)}
    x_train, y_train = train[0].float(), torch.tensor([index[c] for c in train[1]])
    x_val, y_val = val[0].float(), [index.get(c, -1) for c in val[1]]
    best: tuple[float, float, LinearHead] | None = None
    for l2 in sorted(L2_GRID, reverse=True):
        head = fit_logistic(x_train, y_train, len(classes), l2)
        with torch.no_grad():
            predicted = head(x_val).argmax(dim=-1).tolist()
        f1 = _macro_f1(val[1], [classes[p] for p in predicted], classes)
        if best is None or f1 > best[0]:
            best = (f1, l2, head)
    f1, l2, head = best
    known = [i for i, y in enumerate(y_val) if y >= 0]
    if len(known) >= MIN_SAMPLES:
        with torch.no_grad():
            logits = head(x_val[known]).numpy()
        head.temperature.fill_(fit_temperature(logits, [y_val[i] for i in known]))
    accuracy = float(
        np.mean([a == b for a, b in zip(val[1], _predict(head, x_val, classes), strict=True)])
    )
    info = {
        "l2": l2,
        "val_macro_f1": round(f1, 4),
        "val_accuracy": round(accuracy, 4),
        "temperature": round(float(head.temperature), 4),
    }
    return head, info


def _predict(head: LinearHead, x: torch.Tensor, classes: list[str]) -> list[str]:
    with torch.no_grad():
        return [classes[i] for i in head(x).argmax(dim=-1).tolist()]


def _macro_f1(truth: Sequence[str], predicted: Sequence[str], classes: list[str]) -> float:
    labels = sorted(set(classes) | set(truth))
    return classification_metrics(list(truth), list(predicted), labels)["macro_f1"]


def fit_blend(
    llm_scores: torch.Tensor, head_logits: torch.Tensor, targets: Sequence[int]
) -> tuple[EmotionBlend, dict]:
    """Weights ``a``, ``b`` >= 0 of softmax(a * llm + b * head) with the least NLL of
    ``targets`` on the validation split (L-BFGS from a = 1, b = 1, on log a and log b).
    ``llm_scores``, ``head_logits``: [n, L]. Returns the blend and the val NLL of the
    blend, the temperature-scaled LLM and the head alone."""
    y = torch.tensor(list(targets))
    llm, head = llm_scores.double(), head_logits.double()
    log_w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_w], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        w = log_w.exp()
        loss = F.cross_entropy(w[0] * llm + w[1] * head, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = (float(v) for v in log_w.detach().exp())
    llm_t = fit_temperature(llm.numpy(), y.tolist())
    info = {
        "llm_weight": round(a, 4),
        "head_weight": round(b, 4),
        "val_nll": _nll(a * llm + b * head, y),
        "val_nll_llm_only": _nll(llm / llm_t, y),
        "val_nll_head_only": _nll(head, y),
    }
    return EmotionBlend(a, b), info


def _nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    return round(float(F.cross_entropy(logits.double(), y)), 4)
