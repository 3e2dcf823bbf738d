import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgead.tools import metrics


def pairwise_auroc(y, s):
    """AUROC by its definition: P(s+ > s-) + 0.5 P(s+ = s-) over all (positive, negative) pairs."""
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def thresholdwise_ap(y, s):
    """AP by its definition: at each distinct threshold t (descending), precision times the recall gained."""
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        flagged = s >= t
        tp = (flagged & (y == 1)).sum()
        recall = tp / (y == 1).sum()
        ap += (recall - prev_recall) * tp / flagged.sum()
        prev_recall = recall
    return ap


def test_hand_computed_case():
    # ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.3 (-), 0.3 (-)
    y, s = np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.8, 0.7, 0.3, 0.3])
    # 0.9 beats all 3 negatives, 0.7 beats the two 0.3s: 5 of 6 pairs
    assert metrics.roc_auc(y, s) == pytest.approx(5 / 6)
    # recall 0.5 at precision 1 (t=0.9), recall 1 at precision 2/3 (t=0.7)
    assert metrics.average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    fpr, tpr, thr = metrics.roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.7, 0.3])


def test_ties_count_half_and_share_one_threshold():
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # all tied: the only threshold flags everything, precision = prevalence
    assert metrics.average_precision([1, 1, 0], [2.0, 2.0, 2.0]) == pytest.approx(2 / 3)
    # a positive tied with one of two negatives above a positive that loses to both
    y, s = np.array([1, 1, 0, 0]), np.array([3.0, 1.0, 3.0, 2.0])
    assert metrics.roc_auc(y, s) == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert metrics.average_precision(y, s) == pytest.approx(thresholdwise_ap(y, s))


def test_perfect_and_inverted_rankings():
    y, s = np.array([0, 0, 0, 1, 1]), np.arange(5.0)
    assert metrics.roc_auc(y, s) == 1.0 and metrics.average_precision(y, s) == 1.0
    assert metrics.roc_auc(y, -s) == 0.0
    assert metrics.average_precision(y, -s) == pytest.approx(0.5 * 1 / 4 + 0.5 * 2 / 5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-4, 4)), min_size=2, max_size=60))
def test_against_definitions_with_many_ties(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=np.float64) / 2  # small integer grid: plenty of ties
    if y.min() == y.max():
        with pytest.raises(ValueError, match="both normal and anomalous"):
            metrics.roc_auc(y, s)
        return
    assert metrics.roc_auc(y, s) == pytest.approx(pairwise_auroc(y, s))
    assert metrics.average_precision(y, s) == pytest.approx(thresholdwise_ap(y, s))


def test_random_scores_large_and_order_invariant():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.1).astype(np.uint8)
    s = rng.normal(size=3000) + y  # informative
    auc = metrics.roc_auc(y, s)
    assert auc == pytest.approx(pairwise_auroc(y, s))
    assert 0.7 < auc < 0.85  # binormal with unit separation: Phi(1/sqrt(2)) ~ 0.76
    perm = rng.permutation(3000)
    assert metrics.roc_auc(y[perm], s[perm]) == pytest.approx(auc)
    assert metrics.average_precision(y[perm], s[perm]) == pytest.approx(metrics.average_precision(y, s))
    # a monotone transform of the scores changes nothing
    assert metrics.roc_auc(y, np.exp(s)) == pytest.approx(auc)


@pytest.mark.parametrize(("labels", "scores", "match"), [
    ([0, 0, 0], [1.0, 2.0, 3.0], "both normal and anomalous"),
    ([1, 1], [1.0, 2.0], "both normal and anomalous"),
    ([], [], "both normal and anomalous"),
    ([0, 1], [1.0], "differ in length"),
    ([0, 2], [1.0, 2.0], "0 \\(normal\\) or 1"),
    ([0, 1], [1.0, np.nan], "NaN"),
])
def test_bad_inputs(labels, scores, match):
    for fn in (metrics.roc_auc, metrics.average_precision):
        with pytest.raises(ValueError, match=match):
            fn(labels, scores)
