"""Every metric against numbers worked out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from iteacnet.metrics import (
    aggregate,
    classification_metrics,
    compute_metrics,
    format_mean_std,
    mean_std,
    pearson,
    regression_metrics,
)

# Three classes, two utterances each.
CLS_LABELS = np.array([0, 0, 1, 1, 2, 2])
CLS_PRED = np.array([0, 1, 1, 1, 2, 0])
# class 0: P = 1/2, R = 1/2 -> F1 1/2; class 1: P = 2/3, R = 1 -> F1 4/5;
# class 2: P = 1, R = 1/2 -> F1 2/3. Equal supports: WAF = (1/2 + 4/5 + 2/3) / 3 = 59/90.
CLS_WAF = 100 * 59 / 90  # 65.556
CLS_ACC = 100 * 4 / 6  # right at 0, 2, 3, 4

# Sentiment scores; index 2 has label 0 and must be left out of WAF/acc.
REG_LABELS = np.array([2.0, -1.0, 0.0, 0.5, -3.0, 1.5])
REG_SCORES = np.array([1.0, 0.5, 2.0, 0.5, -1.0, 2.0])
# Without index 2: truth pos = [T, F, T, F, T], pred pos = [T, T, T, F, T] -> 4/5 right.
# positive: TP 3, FP 1, FN 0 -> P 3/4, R 1, F1 6/7 (support 3)
# negative: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3 (support 2)
# WAF = (3 · 6/7 + 2 · 2/3) / 5 = 82/105.
REG_WAF = 100 * 82 / 105  # 78.095
REG_ACC = 80.0
# MAE over all six: |−1| + |1.5| + |2| + |0| + |2| + |0.5| = 7 -> 7/6.
REG_MAE = 7 / 6
# Pearson: mean(y) = 0, Σxy = 2 − 0.5 + 0 + 0.25 + 3 + 3 = 7.75,
# Σ(x − x̄)² = 10.5 − 6 · (5/6)² = 19/3, Σy² = 16.5 -> r = 7.75 / sqrt(19/3 · 16.5).
REG_CORR = 7.75 / math.sqrt(19 / 3 * 16.5)  # 0.7581


def test_classification_metrics() -> None:
    m = classification_metrics(CLS_PRED, CLS_LABELS)
    assert m["waf"] == pytest.approx(CLS_WAF)
    assert m["acc"] == pytest.approx(CLS_ACC)


def test_classification_perfect_and_unbalanced() -> None:
    assert classification_metrics(np.array([1, 0, 1]), np.array([1, 0, 1])) == {"waf": 100.0, "acc": 100.0}
    # labels [0, 0, 0, 1], all predicted 0: class 0 F1 = 2·(3/4·1)/(7/4) = 6/7 (support 3),
    # class 1 F1 = 0 (no prediction; zero_division=0) -> WAF = 3/4 · 6/7 = 9/14.
    m = classification_metrics(np.zeros(4, dtype=int), np.array([0, 0, 0, 1]))
    assert m["waf"] == pytest.approx(100 * 9 / 14) and m["acc"] == pytest.approx(75.0)


def test_regression_metrics() -> None:
    m = regression_metrics(REG_SCORES, REG_LABELS)
    assert m["waf"] == pytest.approx(REG_WAF)
    assert m["acc"] == pytest.approx(REG_ACC)
    assert m["mae"] == pytest.approx(REG_MAE)
    assert m["corr"] == pytest.approx(REG_CORR)
    assert m["corr"] == pytest.approx(np.corrcoef(REG_SCORES, REG_LABELS)[0, 1])
    assert m["n_binary"] == 5


def test_label_zero_is_excluded() -> None:
    # Scored with index 2 (label 0 counted as negative, score 2 as positive) accuracy would
    # be 4/6; without it, 4/5.
    assert regression_metrics(REG_SCORES, REG_LABELS)["acc"] == pytest.approx(80.0)
    all_zero = regression_metrics(np.array([0.3, -0.2]), np.zeros(2))
    assert math.isnan(all_zero["waf"]) and math.isnan(all_zero["acc"]) and all_zero["n_binary"] == 0
    assert all_zero["mae"] == pytest.approx(0.25)


def test_score_zero_is_negative() -> None:
    m = regression_metrics(np.array([0.0, 0.0]), np.array([1.0, -1.0]))
    assert m["acc"] == pytest.approx(50.0)


def test_correlation_zero_variance_is_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = regression_metrics(np.ones(4), np.array([1.0, -2.0, 0.5, 3.0]))
        assert math.isnan(m["corr"])
        assert math.isnan(pearson(np.array([1.0]), np.array([2.0])))
        assert pearson(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)


def test_compute_metrics_dispatch() -> None:
    logits = np.eye(3)[CLS_PRED] * 2.0 - 0.5  # argmax = CLS_PRED
    assert compute_metrics(logits, CLS_LABELS, "classification") == pytest.approx(
        {"waf": CLS_WAF, "acc": CLS_ACC}
    )
    col = compute_metrics(REG_SCORES[:, None], REG_LABELS, "regression")
    flat = compute_metrics(REG_SCORES, REG_LABELS, "regression")
    assert col == flat and col["waf"] == pytest.approx(REG_WAF)


def test_compute_metrics_errors() -> None:
    with pytest.raises(ValueError, match="task"):
        compute_metrics(REG_SCORES, REG_LABELS, "ranking")
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(CLS_PRED, CLS_LABELS, "classification")
    with pytest.raises(ValueError, match="length"):
        compute_metrics(REG_SCORES[:3], REG_LABELS, "regression")
    with pytest.raises(ValueError, match="no utterances"):
        classification_metrics(np.zeros(0), np.zeros(0))


def test_mean_std() -> None:
    # [1, 2, 3, 4]: mean 2.5, sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
    m, s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5) and s == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([77.83]) == (pytest.approx(77.83), 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_format_mean_std() -> None:
    assert format_mean_std([1.0, 2.0, 3.0, 4.0]) == "2.50 ± 1.29"
    assert format_mean_std([77.4, 78.2], digits=1) == "77.8 ± 0.6"  # std = 0.8/√2 = 0.566
    assert format_mean_std([5.0]) == "5.00 ± 0.00"
    assert format_mean_std([]) == "–"


def test_aggregate() -> None:
    rows = [
        {"method": "a", "rate": 0.1, "seed": 0, "waf": 70.0, "mae": 1.0},
        {"method": "a", "rate": 0.1, "seed": 1, "waf": 72.0, "mae": float("nan")},
        {"method": "b", "rate": 0.1, "seed": 0, "waf": 60.0},
        {"method": "a", "rate": 0.1, "seed": 2, "waf": 74.0, "mae": ""},
    ]
    out = aggregate(rows, ["method", "rate"], ["waf", "mae"])
    assert [(r["method"], r["rate"], r["n"]) for r in out] == [("a", 0.1, 3), ("b", 0.1, 1)]
    a, b = out
    # waf of a: [70, 72, 74] -> mean 72, sample std 2.
    assert (a["waf_mean"], a["waf_std"], a["waf_n"]) == (pytest.approx(72.0), pytest.approx(2.0), 3)
    assert (a["mae_mean"], a["mae_std"], a["mae_n"]) == (1.0, 0.0, 1)
    assert b["waf_mean"] == 60.0 and b["waf_std"] == 0.0
    assert math.isnan(b["mae_mean"]) and math.isnan(b["mae_std"]) and b["mae_n"] == 0
