"""Temperature scaling and bootstrap intervals: known answers on synthetic data."""

import numpy as np
import pytest

from purrsight.inference.calibration import (
    calibrated_probabilities,
    fit_temperature,
    negative_log_likelihood,
)
from purrsight.inference.metrics import (
    bootstrap_intervals,
    classification_metrics,
    expected_calibration_error,
)


def _draw(true_temperature: float, n: int = 4000, classes: int = 7, seed: int = 0):
    """Scores whose labels are drawn from softmax(scores / true_temperature): the fitted
    temperature of a well-specified model is that one."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, 3.0, size=(n, classes))
    probs = calibrated_probabilities(scores, true_temperature)
    targets = np.array([rng.choice(classes, p=p) for p in probs])
    return scores, targets


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fitted_temperature_recovers_a_known_one(true_temperature: float) -> None:
    scores, targets = _draw(true_temperature)
    fitted = fit_temperature(scores, targets)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    # and it is the minimum of the NLL, not just near the truth
    nll = negative_log_likelihood(scores, targets, fitted)
    assert nll <= negative_log_likelihood(scores, targets, fitted * 1.2)
    assert nll <= negative_log_likelihood(scores, targets, fitted / 1.2)


def test_temperature_lowers_the_calibration_error_of_an_overconfident_model() -> None:
    scores, targets = _draw(3.0, seed=1)  # raw softmax(scores) is 3x too sharp
    predicted = scores.argmax(axis=1)
    correct = (predicted == targets).tolist()
    before = calibrated_probabilities(scores, 1.0).max(axis=1).tolist()
    after = calibrated_probabilities(scores, fit_temperature(scores, targets)).max(axis=1)
    ece_before = expected_calibration_error(before, correct)
    ece_after = expected_calibration_error(after.tolist(), correct)
    assert ece_before > 0.15 and ece_after < 0.05
    # the ranking is kept: the same predictions
    assert (calibrated_probabilities(scores, 2.0).argmax(axis=1) == predicted).all()


def test_fit_refuses_too_few_samples() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        fit_temperature(np.zeros((1, 3)), [0])


def test_bootstrap_interval_holds_the_point_estimate_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]

    def split(n: int):
        truth = [labels[i] for i in rng.integers(0, 3, n)]
        pred = [t if rng.random() < 0.7 else labels[rng.integers(0, 3)] for t in truth]
        return truth, pred

    widths = []
    for n in (60, 600):
        truth, pred = split(n)
        point = classification_metrics(truth, pred, labels)
        intervals = bootstrap_intervals(truth, pred, labels, n_resamples=500)
        for name in ("accuracy", "macro_f1"):
            low, high = intervals[name]
            assert low <= point[name] <= high
        widths.append(intervals["macro_f1"][1] - intervals["macro_f1"][0])
    assert widths[1] < widths[0] / 2  # ~1/sqrt(10) of the width


def test_bootstrap_counts_a_missing_prediction_as_wrong() -> None:
    intervals = bootstrap_intervals(["a"] * 20, [None] * 20, ["a", "b"], n_resamples=50)
    assert intervals["accuracy"] == [0.0, 0.0]
