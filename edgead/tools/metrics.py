"""Ranking metrics for anomaly scores, in numpy (no scikit-learn in the runtime).

Higher score = more anomalous; label 1 = anomalous (positive). Tied scores are one threshold: a tie between a
positive and a negative counts one half towards the AUROC, as in the Mann-Whitney statistic
``AUROC = P(s+ > s-) + 0.5 P(s+ = s-)``. AUPR is the step-wise average precision
``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds (no interpolation), the definition scikit-learn and
the Real3D-AD / Anomaly-ShapeNet benchmarks use. Both are undefined with a single class: that is a ValueError.
"""

from __future__ import annotations

import numpy as np


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten. -> labels (n,) bool, scores (n,) float64."""
    y, s = np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN/Inf values; drop them first")
    y = y.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"need both normal and anomalous samples, got {n_pos} anomalous of {y.size}")
    return y, s


def _counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, descending. -> tp, fp, thresholds."""
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each run of tied scores
    tp = np.cumsum(y)[last]
    return tp, (last + 1) - tp, s[last]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n,), (n,) -> fpr, tpr, thresholds, each (k + 1,): one point per distinct score plus the origin.

    Point i counts ``score >= thresholds[i]`` as anomalous; the origin has threshold +inf.
    """
    y, s = _check(labels, scores)
    tp, fp, thr = _counts(y, s)
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (trapezoids: ties count one half)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n,), (n,) -> precision, recall, thresholds, each (k,), thresholds descending."""
    y, s = _check(labels, scores)
    tp, fp, thr = _counts(y, s)
    return tp / (tp + fp), tp / tp[-1], thr


def average_precision(labels, scores) -> float:
    """Step-wise average precision (area under the PR curve without interpolation)."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
