"""The yardstick's reference classifiers (scikit-learn, a dev dependency): what the data
and the frozen features hold, to compare the pipeline against.

- :func:`oracle_predictions`: a classifier on the cues the demo generator recorded in each
  line's ``response`` (ears, eyes, tail, posture, vocalization, arousal);
- :func:`linear_probe`: multinomial logistic regression on feature vectors, its L2
  strength chosen on the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths tried on the validation split (sklearn's ``C``)."""
CUES = ("ears", "eyes", "tail", "posture", "vocalization")


def recorded_cues(response: Any) -> dict[str, str]:
    """The generator's recorded cues of one response (a dict or its JSON text): each
    evidence field and the arousal, absent ones left out."""
    if not isinstance(response, dict):
        return {}
    evidence = response.get("evidence") or {}
    cues = {k: str(v) for k, v in evidence.items() if k in CUES and v is not None}
    if response.get("arousal") is not None:
        cues["arousal"] = str(response["arousal"])
    return cues


def oracle_predictions(
    train_cues: Sequence[dict[str, str]],
    train_labels: Sequence[str],
    test_cues: Sequence[dict[str, str]],
) -> list[str]:
    """Emotion from the recorded cues alone: logistic regression on their one-hot codes
    (a missing cue is an all-zero block)."""
    vectorizer = DictVectorizer(sparse=False)
    x_train = vectorizer.fit_transform(train_cues)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x_train, list(train_labels))
    return list(model.predict(vectorizer.transform(test_cues)))


def linear_probe(
    x_train: np.ndarray,
    y_train: Sequence[str],
    x_val: np.ndarray,
    y_val: Sequence[str],
    x_test: np.ndarray,
) -> tuple[list[str], float]:
    """Test predictions of a standardised multinomial logistic regression whose ``C`` is
    the one of :data:`C_GRID` with the best validation macro-F1 (then refitted on
    train only, so val stays out of the weights). Returns (predictions, chosen C).
    ``x_*``: [n, d] features."""
    best_c, best_f1 = C_GRID[0], -1.0
    for c in C_GRID:
        model = _probe_model(c).fit(x_train, list(y_train))
        f1 = f1_score(list(y_val), model.predict(x_val), average="macro")
        if f1 > best_f1:
            best_c, best_f1 = c, f1
    model = _probe_model(best_c).fit(x_train, list(y_train))
    return list(model.predict(x_test)), best_c


def _probe_model(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))


def joint_features(
    image: np.ndarray | None, audio: np.ndarray | None, dims: tuple[int, int]
) -> np.ndarray:
    """One vector for any modality subset: [image or zeros, has_image, audio or zeros,
    has_audio] of length ``dims[0] + dims[1] + 2``."""
    parts = []
    for vector, dim in ((image, dims[0]), (audio, dims[1])):
        present = vector is not None
        parts += [np.asarray(vector) if present else np.zeros(dim), np.array([float(present)])]
    return np.concatenate(parts).astype(np.float32)
