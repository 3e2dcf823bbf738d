"""Calibrations specific to one line, kept apart from the engine (``edgead calibrate``):

- ``scene``: fit the conveyor/table plane in a scan (RANSAC, then least squares on the inliers) and a region of
  interest above it, so that ``serve`` and ``sensor realsense`` crop the part out of the raw sensor cloud;
- ``threshold``: the decision threshold from held-out normal scans at a target false-alarm rate, or the F1-optimal
  one when anomalous scans are given too. Changing it needs no re-export: ``serve --threshold FILE``.

Held-out means scans the model was not fitted on: training scans score lower than new good parts (the model has
seen them), so a threshold taken from them raises false alarms on the line. :func:`normal_scans` therefore takes a
category directory's good *test* scans and refuses training scans and scans labelled defective. With n good scans
a false-alarm rate is resolved in steps of 1/n only: the calibration records the rate measured and an upper bound
on the true rate (95 %, Clopper-Pearson), and :func:`unresolved_far` says when the target is finer than n can resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import beta
from tqdm import tqdm

from edgead.formats.dataset import defect_labelled, detect_layout, load_test, scan_files
from edgead.formats.pointcloud import read_points
from edgead.formats.scene import Scene, crop


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


@dataclass
class Scans:
    """Scans chosen for a calibration, and a sentence on where they came from and what was left out."""

    names: list[str]
    points: list[np.ndarray]
    source: str


def _category_of(d: Path) -> Path | None:
    """The category directory ``d`` is, or whose ``test/`` split it is; None for a plain folder of scans."""
    if detect_layout(d) != "folder":
        return d
    if d.name == "test" and d.parent != d and detect_layout(d.parent) != "folder":
        return d.parent
    return None


def normal_scans(path) -> Scans:
    """Held-out good scans: a category directory's (or its ``test/`` split's) good test scans, or every scan in a
    plain folder. Refuses training scans (a ``train/`` folder, ``*template*`` files) and scans whose point labels
    mark defects, naming them."""
    d = Path(path)
    category = _category_of(d)
    if category is not None:
        samples = load_test(category)
        good = [s for s in samples if s.label == 0]
        if not good:
            raise ValueError(f"{category}: no good test scans (names with 'good' or 'positive') to calibrate on")
        return Scans([s.name for s in good], [s.points for s in good],
                     f"the {len(good)} good test scans of {category} ({len(samples) - len(good)} defective ones "
                     f"left out; --anomalous {category} uses them)")
    files = scan_files(d)
    if not files:
        raise ValueError(f"{d}: no scans found (a category directory, its test/ split or a folder of point-cloud "
                         "files)")
    if d.name == "train" or any("template" in f.stem for f in files):
        raise ValueError(f"{d}: these are training scans; the model was fitted on them, so they score lower than new "
                         "good parts and a threshold from them raises false alarms. Calibrate on held-out good scans: "
                         f"the category directory ({d.parent}) gives its good test scans")
    bad = defect_labelled(files)
    if bad:
        raise ValueError(f"{d}: {len(bad)} scans label points as defective ({', '.join(f.name for f in bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}); --normal takes good parts only (defective ones go to "
                         "--anomalous)")
    return Scans([f.name for f in files], [read_points(f) for f in files], f"the {len(files)} scans in {d}")


def anomalous_scans(path) -> Scans:
    """Defective scans: a category directory's (or its ``test/`` split's) defective test scans, or every scan in a
    plain folder."""
    d = Path(path)
    category = _category_of(d)
    if category is not None:
        bad = [s for s in load_test(category) if s.label == 1]
        if not bad:
            raise ValueError(f"{category}: no defective test scans")
        return Scans([s.name for s in bad], [s.points for s in bad], f"the {len(bad)} defective test scans of "
                     f"{category}")
    files = scan_files(d)
    if not files:
        raise ValueError(f"{d}: no scans found")
    return Scans([f.name for f in files], [read_points(f) for f in files], f"the {len(files)} scans in {d}")


def far_upper_bound(false_alarms: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on the true false-alarm rate after ``false_alarms`` of ``n``:
    0 of 15 bounds it below 18 %, 0 of 300 below 1 %."""
    return 1.0 if false_alarms >= n else float(beta.ppf(confidence, false_alarms + 1, n - false_alarms))


def unresolved_far(doc: dict) -> str | None:
    """A warning when a far-method calibration's target is finer than its number of good scans can resolve."""
    n, far = doc["n_normal"], doc["far_target"]
    if doc["method"] != "far" or not 0 < far < 1 / n:
        return None
    return (f"--far {far:g} cannot be resolved with {n} good scans (steps of 1/{n} = {1 / n:.1%}); it needs at least "
            f"{int(np.ceil(1 / far))}. The threshold is the highest good score")


def calibrate_threshold(detector, normal: list[np.ndarray], anomalous: list[np.ndarray] | None = None,
                        far: float = 0.01, crop_scene: Scene | None = None, progress: bool = False) -> dict:
    """Score the held-out scans and choose the threshold. Returns the calibration document (JSON-able)."""
    def scores(clouds, what):
        bar = tqdm(clouds, desc=f"scoring {what} scans", unit="scan", disable=not progress, leave=False)
        return np.array([detector.detect(crop(p, crop_scene) if crop_scene else p).score for p in bar])

    if not normal:
        raise ValueError("threshold calibration needs at least one held-out normal scan")
    s_norm = scores(normal, "good")
    doc = {"n_normal": len(normal), "far_target": far, "model_name": detector.name,
           "model_hash": detector.model_hash, "normal_scores": s_norm.tolist()}
    if anomalous:
        s_anom = scores(anomalous, "defective")
        t, f1 = f1_threshold(s_norm, s_anom)
        doc.update(method="f1", f1=f1, recall=float((s_anom > t).mean()), n_anomalous=len(anomalous),
                   anomalous_scores=s_anom.tolist())
    else:
        t = far_threshold(s_norm, far)
        doc.update(method="far")
    false_alarms = int((s_norm > t).sum())
    doc.update(threshold=t, far_measured=false_alarms / len(normal),
               far_upper_95=far_upper_bound(false_alarms, len(normal)))
    return doc
