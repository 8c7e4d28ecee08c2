"""Classification and calibration metrics against hand-worked values (and scikit-learn,
when it happens to be installed; it is not a dependency)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from purrsight.inference.metrics import (
    calibration_bins,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    majority_label,
)

ABC = ["a", "b", "c"]


def test_perfect_predictions():
    y = ["a", "b", "c", "a"]
    m = classification_metrics(y, y, ABC)
    assert m["accuracy"] == m["macro_f1"] == m["balanced_accuracy"] == 1.0
    assert m["n"] == 4 and m["n_none"] == 0
    assert m["confusion_matrix"] == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert m["confusion_columns"] == ["a", "b", "c", "none"]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    # Baseline always says "a": right on 2 of 4; F1(a) = 2·0.5·1/1.5 = 2/3, b and c 0.
    assert m["baseline"]["label"] == "a"
    assert m["baseline"]["accuracy"] == 0.5
    assert m["baseline"]["macro_f1"] == pytest.approx((2 / 3) / 3)


def test_all_wrong():
    m = classification_metrics(["a", "b", "c"], ["b", "c", "a"], ABC)
    assert m["accuracy"] == m["macro_f1"] == m["balanced_accuracy"] == 0.0
    assert m["confusion_matrix"] == [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]


def test_none_predictions_count_as_wrong():
    m = classification_metrics(["a", "a", "b", "b"], ["a", None, "b", None], ABC)
    assert m["n_none"] == 2
    assert m["accuracy"] == 0.5
    # a: P = 1/1, R = 1/2 → F1 = 2/3; same for b; c never true nor predicted → left out.
    assert m["per_class"]["a"]["precision"] == 1.0 and m["per_class"]["a"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0]]

    nothing = classification_metrics(["a", "b"], [None, None], ABC)
    assert nothing["accuracy"] == nothing["macro_f1"] == nothing["balanced_accuracy"] == 0.0


def test_three_class_example_worked_by_hand():
    y_true = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
    y_pred = ["a", "a", "a", "b", "b", "b", "a", "c", None, "a"]
    m = classification_metrics(y_true, y_pred, ABC)
    # Confusion (rows true a, b, c; columns a, b, c, none):
    assert m["confusion_matrix"] == [[3, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 1]]
    # a: TP 3, predicted 5, support 4 → P 3/5, R 3/4, F1 = 2·(.6·.75)/(1.35) = 2/3.
    # b: TP 2, predicted 3, support 3 → P 2/3, R 2/3, F1 2/3.
    # c: TP 1, predicted 1, support 3 → P 1, R 1/3, F1 = 2·(1/3)/(4/3) = 1/2.
    pc = m["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"]) == pytest.approx((0.6, 0.75))
    assert pc["a"]["f1"] == pytest.approx(2 / 3)
    assert pc["b"]["f1"] == pytest.approx(2 / 3)
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == pytest.approx(
        (1.0, 1 / 3, 0.5)
    )
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)  # 0.6111
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 1 / 3) / 3)  # 0.5833
    # Majority baseline "a": accuracy 4/10; F1(a) = 2·0.4·1/1.4 = 4/7, others 0.
    assert m["baseline"]["accuracy"] == pytest.approx(0.4)
    assert m["baseline"]["macro_f1"] == pytest.approx((4 / 7) / 3)


def test_labels_missing_from_the_split_do_not_count_in_macro_f1():
    labels = [*ABC, "d"]  # "d" is never true and never predicted
    m = classification_metrics(["a", "b"], ["a", "b"], labels)
    assert m["macro_f1"] == 1.0
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # A label predicted but never true does count (F1 0): predicting it was wrong.
    m = classification_metrics(["a", "b"], ["a", "d"], labels)
    assert m["macro_f1"] == pytest.approx(1 / 3)


def test_baseline_label_can_come_from_elsewhere_and_ties_go_to_label_order():
    assert majority_label(["b", "a", "b", "a"], ABC) == "a"
    m = classification_metrics(["a", "b", "b"], ["a", "b", "b"], ABC, baseline_label="c")
    assert m["baseline"] == {
        "label": "c",
        "accuracy": 0.0,
        "macro_f1": 0.0,
        "balanced_accuracy": 0.0,
    }


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not in the label set"):
        classification_metrics(["z"], ["a"], ABC)
    with pytest.raises(ValueError, match="map them to None"):
        classification_metrics(["a"], ["unsure"], ABC)
    with pytest.raises(ValueError, match="predictions"):
        classification_metrics(["a", "b"], ["a"], ABC)
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], [], ABC)


def test_agrees_with_scikit_learn_when_installed():
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    labels = ["content", "playful", "curious", "demanding", "fearful", "aggressive", "in_pain"]
    for _ in range(20):
        n = rng.randint(1, 40)
        y_true = [rng.choice(labels[:5]) for _ in range(n)]  # some labels absent
        y_pred = [rng.choice([*labels, None]) for _ in range(n)]
        m = classification_metrics(y_true, y_pred, labels)
        # scikit-learn cannot take None: an extra class that is never averaged over.
        sk_pred = ["__none__" if y is None else y for y in y_pred]
        seen = [label for label in labels if label in y_true or label in y_pred]
        assert m["accuracy"] == pytest.approx(sk.accuracy_score(y_true, sk_pred))
        assert m["macro_f1"] == pytest.approx(
            sk.f1_score(y_true, sk_pred, labels=seen, average="macro", zero_division=0)
        )
        p, r, f, s = sk.precision_recall_fscore_support(
            y_true, sk_pred, labels=labels, zero_division=0
        )
        for i, label in enumerate(labels):
            got = m["per_class"][label]
            assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], r[i], f[i]))
            assert got["support"] == s[i]
        cm = sk.confusion_matrix(y_true, sk_pred, labels=[*labels, "__none__"])
        assert np.array_equal(confusion_matrix(y_true, y_pred, labels), cm[: len(labels)])


def test_ece_worked_by_hand():
    # Bins of width 0.5: (0, .5] gets .2, .4 (mean .3, 1 of 2 right → gap .2);
    # (.5, 1] gets .6, .8, 1.0 (mean .8, 2 of 3 right → gap .8 − 2/3 = 2/15).
    # ECE = (2·0.2 + 3·2/15) / 5 = (0.4 + 0.4) / 5 = 0.16.
    conf = [0.2, 0.4, 0.6, 0.8, 1.0]
    correct = [True, False, True, True, False]
    assert expected_calibration_error(conf, correct, n_bins=2) == pytest.approx(0.16)
    bins = calibration_bins(conf, correct, n_bins=2)
    assert [b["count"] for b in bins] == [2, 3]
    assert bins[0]["confidence"] == pytest.approx(0.3) and bins[0]["accuracy"] == 0.5


def test_ece_edges_and_extremes():
    # A bin is (lo, hi]: 0.3 belongs to (0.2, 0.3], 0 to the first bin, 1 to the last.
    bins = calibration_bins([0.0, 0.3, 1.0], [False, True, True], n_bins=10)
    assert [i for i, b in enumerate(bins) if b["count"]] == [0, 2, 9]
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([0.9] * 10, [False] * 10) == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [True])
    with pytest.raises(ValueError, match="no samples"):
        expected_calibration_error([], [])
