"""The quality yardstick's reference classifiers on synthetic data with known answers."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality_probes import (  # noqa: E402
    joint_features,
    linear_probe,
    oracle_predictions,
    recorded_cues,
)


def _separable(n: int, seed: int):
    """Three classes in 16-d, each around its own far-apart centre."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, 16) * 10
    return centres[y] + rng.normal(0, 1, (n, 16)), [f"c{k}" for k in y]


def test_probe_reaches_one_on_separable_features() -> None:
    x_train, y_train = _separable(120, 0)
    x_val, y_val = _separable(40, 1)
    x_test, y_test = _separable(60, 2)
    predicted, chosen_c = linear_probe(x_train, y_train, x_val, y_val, x_test)
    assert predicted == y_test
    assert chosen_c > 0


def test_probe_is_at_chance_on_noise() -> None:
    rng = np.random.default_rng(0)
    y = [f"c{k}" for k in rng.integers(0, 3, 600)]
    x = rng.normal(size=(600, 16))
    predicted, _ = linear_probe(x[:300], y[:300], x[300:400], y[300:400], x[400:])
    accuracy = np.mean([p == t for p, t in zip(predicted, y[400:], strict=True)])
    assert accuracy < 0.5  # chance is 1/3


def test_oracle_reads_the_recorded_cues() -> None:
    responses = [
        {"emotion": "a", "arousal": "high", "evidence": {"ears": "flat", "tail": None}},
        {"emotion": "b", "arousal": "low", "evidence": {"ears": "up", "tail": "up"}},
    ] * 10
    cues = [recorded_cues(r) for r in responses]
    assert cues[0] == {"ears": "flat", "arousal": "high"}  # None and absent cues left out
    predicted = oracle_predictions(cues, [r["emotion"] for r in responses], cues[:2])
    assert predicted == ["a", "b"]
    assert recorded_cues("free text") == {}


def test_joint_features_mark_missing_modalities() -> None:
    v = joint_features(np.ones(3), None, (3, 2))
    assert v.tolist() == [1, 1, 1, 1, 0, 0, 0]
