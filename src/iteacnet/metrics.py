"""Metrics (METHOD §7). Rates are in percent (WAF 77.83), MAE and Pearson r are not.

Classification: weighted F1 (WAF) and accuracy over all utterances.
Regression (MOSI/MOSEI): binary positive-vs-negative WAF and accuracy over the utterances
whose label is not 0 (label > 0 positive, score > 0 positive, so a score of exactly 0
counts as negative), plus MAE and Pearson r over all utterances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

TASKS: tuple[str, ...] = ("classification", "regression")


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    return a


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"predictions ({len(a)}) and labels ({len(b)}) differ in length")
    if len(a) == 0:
        raise ValueError("no utterances to score")


def classification_metrics(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"waf": weighted F1 · 100, "acc": accuracy · 100} of class predictions (N,)."""
    p = _as_1d(pred, "pred").astype(np.int64)
    y = _as_1d(labels, "labels").astype(np.int64)
    _check_pair(p, y)
    return {
        "waf": 100.0 * float(f1_score(y, p, average="weighted", zero_division=0)),
        "acc": 100.0 * float(accuracy_score(y, p)),
    }


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; nan (silently) when either side has zero variance or fewer than 2 points."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if den == 0.0 or not math.isfinite(den):
        return math.nan
    return float(np.clip((dx * dy).sum() / den, -1.0, 1.0))


def regression_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Binary WAF/acc (label-0 excluded, percent), MAE and Pearson r (all utterances).

    `n_binary` is the number of utterances scored by WAF/acc; with none, both are nan.
    """
    s = _as_1d(scores, "scores").astype(np.float64)
    y = _as_1d(labels, "labels").astype(np.float64)
    _check_pair(s, y)
    nonzero = y != 0
    n_binary = int(nonzero.sum())
    if n_binary > 0:
        b = classification_metrics((s[nonzero] > 0).astype(np.int64), (y[nonzero] > 0).astype(np.int64))
        waf, acc = b["waf"], b["acc"]
    else:
        waf = acc = math.nan
    return {
        "waf": waf,
        "acc": acc,
        "mae": float(np.abs(s - y).mean()),
        "corr": pearson(s, y),
        "n_binary": float(n_binary),
    }


def compute_metrics(outputs: np.ndarray, labels: np.ndarray, task: str) -> dict[str, float]:
    """Metrics of model outputs: (N, C) logits for classification (argmax), (N, 1) or (N,)
    scores for regression."""
    out = np.asarray(outputs)
    if task == "classification":
        if out.ndim != 2:
            raise ValueError(f"classification outputs must be (N, C) logits, got shape {out.shape}")
        return classification_metrics(out.argmax(axis=1), labels)
    if task == "regression":
        return regression_metrics(out, labels)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# ---------------------------------------------------------------------------- over seeds
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof = 1) of `values`; std is 0.0 for one value.

    Sample std because the values are a few seeds drawn from the run-to-run distribution.
    """
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_std of no values")
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return float(a.mean()), std


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """'77.83 ± 0.41'; '–' for no values (an empty table cell)."""
    if len(values) == 0:
        return "–"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _is_missing(v: Any) -> bool:
    if v is None or v == "":
        return True
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def aggregate(rows: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """Group `rows` by `keys` (first-appearance order) and summarize each metric.

    One dict per group: the key values, `n` (rows in the group) and per metric
    `<metric>_mean`, `<metric>_std` (sample std, see `mean_std`) and `<metric>_n`. Missing
    values (absent, None, "", nan, non-numeric) are skipped; with none left mean/std are nan.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for gkey, members in groups.items():
        summary: dict[str, Any] = dict(zip(keys, gkey))
        summary["n"] = len(members)
        for m in metrics:
            vals = [float(r[m]) for r in members if not _is_missing(r.get(m))]
            mu, sd = mean_std(vals) if vals else (math.nan, math.nan)
            summary[f"{m}_mean"], summary[f"{m}_std"], summary[f"{m}_n"] = mu, sd, len(vals)
        out.append(summary)
    return out
