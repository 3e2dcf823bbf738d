"""Calibrations specific to one line, kept apart from the engine (``edgead calibrate``):

- ``scene``: fit the conveyor/table plane in a scan (RANSAC, then least squares on the inliers) and a region of
  interest above it, so that ``serve`` and ``sensor realsense`` crop the part out of the raw sensor cloud;
- ``threshold``: the decision threshold from held-out normal scans at a target false-alarm rate, or the F1-optimal
  one when anomalous scans are given too. Changing it needs no re-export: ``serve --threshold FILE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.formats.pointcloud import read_points
from edgead.formats.scene import Scene, crop

SCAN_SUFFIXES = (".pcd", ".ply", ".npy", ".txt", ".xyz")


def fit_plane(points: np.ndarray, tol: float, iters: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC plane: (N, 3) -> (unit normal (3,), inlier mask (N,)). Refined by least squares on the inliers."""
    pts = points[np.isfinite(points).all(1)].astype(np.float64)
    if len(pts) < 3:
        raise ValueError(f"a plane needs at least 3 finite points, got {len(pts)}")
    rng = np.random.default_rng(seed)
    best, best_count = None, -1
    for _ in range(iters):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        count = int((np.abs((pts - a) @ n) < tol).sum())
        if count > best_count:
            best, best_count = (n, a), count
    if best is None:
        raise ValueError("no plane found: the scan's points are collinear")
    n, a = best
    inliers = np.abs((pts - a) @ n) < tol
    centre = pts[inliers].mean(0)
    n = np.linalg.svd(pts[inliers] - centre, full_matrices=False)[2][2]  # least-squares normal
    full = np.zeros(len(points), bool)
    full[np.flatnonzero(np.isfinite(points).all(1))] = np.abs((pts - centre) @ n) < tol
    return n, full


def calibrate_scene(points: np.ndarray, tol: float = 1.0, min_height: float | None = None,
                    max_height: float = 500.0, margin: float = 0.0, seed: int = 0) -> Scene:
    """Scan of the empty (or loaded) conveyor, in the sensor's frame -> Scene. The normal points to the sensor; the
    ROI spans the plane inliers' extent (+ ``margin``) and heights from ``min_height`` (3 tol by default, so the
    belt itself is cut) to ``max_height``."""
    n, inliers = fit_plane(points, tol, seed=seed)
    plane = points[inliers]
    origin = plane.mean(0)
    if origin @ n > 0:  # the sensor (at the origin of its frame) sees the side of the belt the parts are on
        n = -n
    u = np.cross(n, [1.0, 0, 0] if abs(n[0]) < 0.9 else [0, 1.0, 0])
    u /= np.linalg.norm(u)
    axes = np.stack([u, np.cross(n, u), n])
    q = (plane - origin) @ axes.T
    lo = [*(q[:, :2].min(0) - margin), 3 * tol if min_height is None else min_height]
    hi = [*(q[:, :2].max(0) + margin), max_height]
    return Scene(origin.tolist(), axes.tolist(), [float(x) for x in lo], [float(x) for x in hi])


# -- threshold --------------------------------------------------------------------------------------------------
def far_threshold(normal: np.ndarray, far: float) -> float:
    """The lowest threshold with at most ``floor(far * n)`` normal scores above it: the (k+1)-th largest score.

    With n normal scans the false-alarm rate is resolved in steps of 1/n; far < 1/n gives the maximum."""
    s = np.sort(np.asarray(normal, np.float64))
    return float(s[len(s) - 1 - int(np.floor(far * len(s)))])


def f1_threshold(normal: np.ndarray, anomalous: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score > threshold`` over all candidate thresholds (the scores, and
    just below the lowest). Ties in F1 go to the higher threshold (fewer false alarms)."""
    scores = np.concatenate([normal, anomalous]).astype(np.float64)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    best = (-1.0, 0.0)
    for t in np.unique(np.r_[scores, scores.min() - 1e-6]):
        pred = scores > t
        tp = float((pred & (labels == 1)).sum())
        f1 = 2 * tp / (pred.sum() + len(anomalous)) if tp else 0.0
        if f1 >= best[0]:
            best = (f1, float(t))
    return best[1], best[0]


def read_scans(directory) -> list[tuple[str, np.ndarray]]:
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in SCAN_SUFFIXES) if directory.is_dir() else []
    if not files:
        raise ValueError(f"{directory}: no scans ({', '.join(SCAN_SUFFIXES)}) found")
    out = []
    for f in files:
        out.append((f.name, read_points(f)))
    return out


def calibrate_threshold(detector, normal: list[np.ndarray], anomalous: list[np.ndarray] | None = None,
                        far: float = 0.01, crop_scene: Scene | None = None) -> dict:
    """Score the held-out scans and choose the threshold. Returns the calibration document (JSON-able)."""
    def score(points):
        return detector.detect(crop(points, crop_scene) if crop_scene else points).score

    if not normal:
        raise ValueError("threshold calibration needs at least one held-out normal scan")
    s_norm = np.array([score(p) for p in normal])
    doc = {"n_normal": len(normal), "far_target": far, "model_name": detector.name,
           "model_hash": detector.model_hash, "normal_scores": s_norm.tolist()}
    if anomalous:
        s_anom = np.array([score(p) for p in anomalous])
        t, f1 = f1_threshold(s_norm, s_anom)
        doc.update(method="f1", f1=f1, recall=float((s_anom > t).mean()), n_anomalous=len(anomalous),
                   anomalous_scores=s_anom.tolist())
    else:
        t = far_threshold(s_norm, far)
        doc.update(method="far")
    doc.update(threshold=t, far_measured=float((s_norm > t).mean()))
    return doc
