"""The public detector API (issue 2, item 8), exercised with the template detector: no network needed."""

import numpy as np
import pytest
from test_template import part_scan

from edgead import DetectionResult, EdgeDetector
from edgead.detector import MAX_POINTS, object_score
from edgead.detectors import template


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("api_run")
    template.train([part_scan(15000, s)[0] for s in range(3)], out)
    return out


@pytest.fixture(scope="module")
def det(run_dir):
    return EdgeDetector.load(run_dir)


@pytest.fixture(scope="module")
def frame():
    return part_scan(8000, 42, bulge=2.0)


def test_detect_returns_the_documented_fields(det, frame):
    pts, labels = frame
    res = det.detect(pts)
    assert isinstance(res, DetectionResult)
    assert res.point_scores.shape == (len(pts),) and res.point_scores.dtype == np.float32
    assert isinstance(res.score, float) and res.score == pytest.approx(object_score(pts, res.point_scores))
    assert res.threshold is None and res.anomalous is None and res.n_dropped == 0
    assert set(res.timings_ms) == {"preprocess", "network", "postprocess", "total"}
    # input order: the highest scores sit on the labelled defect, wherever it is in the array
    perm = np.random.default_rng(0).permutation(len(pts))
    shuffled = det.detect(pts[perm])
    # (the ICP subsample differs with the order: the pose, so the scores, move by hundredths of a mm)
    np.testing.assert_allclose(shuffled.point_scores, res.point_scores[perm], atol=0.03)
    assert labels[np.argsort(res.point_scores)[-20:]].all()


def test_threshold_decides_anomalous(run_dir, frame, tmp_path):
    good = part_scan(8000, 43)[0]
    det = EdgeDetector.load(run_dir, threshold=1.2)
    assert det.detect(frame[0]).anomalous is True and det.detect(good).anomalous is False
    assert det.detect(good).threshold == 1.2
    calib = tmp_path / "threshold.json"
    calib.write_text('{"threshold": 50.0}')
    assert EdgeDetector.load(run_dir, threshold=calib).detect(frame[0]).anomalous is False


def test_nan_rows_are_dropped_and_reported(det, frame):
    pts = frame[0].copy()
    bad = [3, 100, 7999]
    pts[bad[0]] = np.nan
    pts[bad[1], 2] = np.inf
    pts[bad[2], 0] = -np.inf
    res = det.detect(pts)
    assert res.point_scores.shape == (len(pts),) and res.n_dropped == 3
    assert np.isnan(res.point_scores[bad]).all()
    keep = np.setdiff1d(np.arange(len(pts)), bad)
    assert np.isfinite(res.point_scores[keep]).all()
    np.testing.assert_allclose(res.point_scores[keep], det.detect(frame[0][keep]).point_scores, atol=1e-3)


@pytest.mark.parametrize(("points", "match"), [
    ([[0.0, 0.0, 0.0]] * 100, "numpy array, got list"),
    (np.zeros((100, 3), np.int32), "float array, got dtype int32"),
    (np.zeros((100, 2), np.float32), r"shape \(N, 3\), got \(100, 2\)"),
    (np.zeros((3, 100, 3), np.float32), r"shape \(N, 3\)"),
    (np.zeros((0, 3), np.float32), "no points"),
    (np.ones((10, 3), np.float32), "10 finite points of 10, the model needs at least"),
    (np.full((500, 3), np.nan, np.float32), "0 finite points of 500"),
])
def test_bad_input_is_a_clear_value_error(det, points, match):
    with pytest.raises(ValueError, match=match):
        det.detect(points)


def test_oversized_frame_is_rejected_before_any_work(det):
    big = np.broadcast_to(np.float32(0), (MAX_POINTS + 1, 3))  # no memory: a view of one value
    with pytest.raises(ValueError, match="more than the limit"):
        det.detect(big)


def test_same_input_same_output(det, frame):
    a, b = det.detect(frame[0]), det.detect(frame[0].copy())
    np.testing.assert_array_equal(a.point_scores, b.point_scores)
    assert a.score == b.score


def test_translation_invariance(det, frame):
    pts = frame[0]
    shifted = det.detect(pts + np.float32(500.0))
    res = det.detect(pts)
    np.testing.assert_allclose(shifted.point_scores, res.point_scores, atol=0.02)  # mm; float32 at ~1 m
    assert shifted.score == pytest.approx(res.score, abs=0.02)


def test_float64_input_and_missing_run_dir(det, frame, tmp_path):
    res = det.detect(frame[0].astype(np.float64))
    assert res.point_scores.dtype == np.float32 and res.point_scores.shape == (len(frame[0]),)
    with pytest.raises(FileNotFoundError, match="no such engine or run directory"):
        EdgeDetector.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        EdgeDetector.load(tmp_path)


def test_object_score_ignores_a_lone_outlier_but_not_a_defect_patch():
    rng = np.random.default_rng(3)
    pts = rng.random((5000, 3)).astype(np.float32) * [100, 100, 1]
    scores = np.full(5000, 0.1, np.float32)
    outlier = scores.copy()
    outlier[17] = 5.0  # one flying pixel
    patch = scores.copy()
    near = np.linalg.norm(pts - pts[17], axis=1) < 6  # a defect: a neighbourhood of high scores
    patch[near] = 1.0
    assert near.sum() > 30
    assert object_score(pts, outlier, k=1) == pytest.approx(5.0)  # the papers' plain max
    assert object_score(pts, outlier) < 0.5
    assert object_score(pts, patch) > 0.9 > object_score(pts, outlier)
