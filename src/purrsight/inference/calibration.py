"""Temperature scaling (Guo et al., 2017): one scalar ``T`` that divides the label scores
before the softmax, fitted on the validation split by minimising the negative
log-likelihood. It changes confidence, never the ranking (argmax is kept), so accuracy
and macro-F1 are untouched while the expected calibration error drops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

LOG_T_BOUNDS = (math.log(0.05), math.log(50.0))
"""Search range of log T: from sharpening 20x to flattening 50x; the bounds keep a
degenerate split (all correct, or a single class) from driving T to 0 or infinity."""


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def negative_log_likelihood(scores: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean NLL of ``targets`` [n] (class indices) under softmax(``scores`` [n, L] / T)."""
    log_probs = _log_softmax(scores / temperature)
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def fit_temperature(
    scores: Sequence[Sequence[float]] | np.ndarray, targets: Sequence[int]
) -> float:
    """The temperature T > 0 that minimises the NLL of ``targets`` under
    softmax(scores / T). ``scores``: [n, L] unnormalised label scores (log-likelihoods or
    logits); ``targets``: [n] indices of the true labels. Needs at least 2 samples."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(targets) or len(targets) < 2:
        raise ValueError(
            f"need [n, L] scores and n >= 2 targets, got {scores.shape} and {targets.shape}"
        )
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(scores, targets, math.exp(log_t)),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


def calibrated_probabilities(scores: np.ndarray, temperature: float) -> np.ndarray:
    """[n, L] softmax(scores / T)."""
    return np.exp(_log_softmax(np.asarray(scores, dtype=np.float64) / temperature))
