"""The detector API every consumer uses: ``EdgeDetector.load(path).detect(points)``.

A detector is a torch-free :class:`~edgead.detectors.Pipeline` (pre- and post-processing in numpy, or CUDA on the
TensorRT path) around a network *runner*: a function from named input arrays to named output arrays. The runner is
the only part that differs between backends (PyTorch eager, ONNX Runtime, TensorRT), so every backend shares one
definition of grouping and scoring.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgead import ops

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

MAX_POINTS = 5_000_000  # a frame larger than this is a sensor or framing error, not a part
OBJECT_K = 16  # object score: max over points of the mean point score of their OBJECT_K nearest neighbours
OBJECT_POINTS = 16384  # ... computed on a stride subsample of at most this many points


class NotInspected(ValueError):
    """A frame the detector cannot judge (too few points, too little of the part seen, a registration that does not
    fit): never a pass. The message says why, e.g. ``32 points, the model needs at least 2000``."""


@dataclass
class DetectionResult:
    score: float  # object-level anomaly score (see object_score)
    point_scores: np.ndarray  # (N,) float32, one per input point in input order; NaN for dropped points
    threshold: float | None
    anomalous: bool | None  # None when no threshold is set
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage: preprocess, network, postprocess, total
    n_dropped: int = 0  # input rows with NaN/Inf coordinates, dropped before inference


def validate_points(points, min_points: int, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Check a frame and drop non-finite rows. Returns (finite points (M, 3) float32, keep mask (N,) bool).

    Raises ValueError naming the problem: wrong type, dtype, shape, too few or too many points.
    """
    if not isinstance(points, np.ndarray):
        raise ValueError(f"points must be a numpy array, got {type(points).__name__}")
    if points.dtype.kind != "f":
        raise ValueError(f"points must be a float array, got dtype {points.dtype}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    if len(points) > max_points:
        raise ValueError(f"frame has {len(points)} points, more than the limit of {max_points}")
    with np.errstate(over="ignore"):  # a float64 row beyond float32's range becomes inf: dropped like NaN rows
        pts = np.ascontiguousarray(points, dtype=np.float32)
    if np.isfinite(pts.sum(dtype=np.float64)):  # fast path: a sum is finite only if every value is
        keep = np.ones(len(pts), dtype=bool)
    else:
        keep = np.isfinite(pts).all(axis=1)
    n_valid = int(keep.sum())
    if n_valid < min_points:
        what = "no points" if len(points) == 0 else f"{n_valid} finite points of {len(points)}"
        raise NotInspected(f"{what}, the model needs at least {min_points}")
    return (pts if n_valid == len(pts) else pts[keep]), keep


def object_score(points: np.ndarray, scores: np.ndarray, k: int = OBJECT_K) -> float:
    """Max over points of the mean score of each point's k nearest neighbours. (N, 3), (N,) -> float.

    The papers take the plain max of the point scores (``k=1``). On scanned data that max is set by single flying
    pixels rather than by defects, which are patches of points; averaging over a neighbourhood first lets a defect
    keep its score and an isolated outlier lose it (measured in docs/evaluation.md). The neighbourhood is taken in
    a stride subsample of at most OBJECT_POINTS points, so it covers the same share of the part at any resolution
    and costs the same for any frame size.
    """
    if k <= 1:
        return float(scores.max())
    sub = ops.stride_subsample(len(points), OBJECT_POINTS)
    x, s = points[sub], scores[sub]
    _, idx = ops.knn(x, x, min(k, len(x)))
    return float(s[idx].mean(1).max())


def load_threshold(source) -> float | None:
    """A threshold from a number, or from a calibration JSON file with a ``threshold`` key."""
    if source is None:
        return None
    if isinstance(source, (int, float)):
        return float(source)
    path = Path(source)
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a threshold calibration file ({exc})") from exc


class EdgeDetector:
    """One loaded detector. Not thread-safe: give each thread its own (backends hold reusable buffers)."""

    def __init__(self, pipeline, runner: Runner | None, *, backend: str, name: str = "", model_hash: str = "",
                 threshold: float | None = None, object_k: int = OBJECT_K):
        self.pipeline = pipeline
        self.runner = runner
        self.backend = backend
        self.name = name or pipeline.kind
        self.model_hash = model_hash
        self.threshold = threshold
        self.object_k = object_k  # 1: the papers' plain max of the point scores

    @classmethod
    def load(cls, path, *, threshold=None, device: str = "cpu") -> EdgeDetector:
        """Load a run directory (PyTorch, or numpy for ``template``), an ``.onnx`` engine or a ``.plan`` engine.

        ``threshold`` is a number or a calibration file; without it the run's or manifest's own threshold (if any)
        is used. ``device`` applies to run directories ("cpu", "cuda") and ONNX ("cpu", "cuda").
        """
        from edgead import runtime

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such engine or run directory")
        det = runtime.load(path, device=device)
        if threshold is not None:
            det.threshold = load_threshold(threshold)
        return det

    def detect(self, points: np.ndarray) -> DetectionResult:
        t0 = time.perf_counter()
        finite, keep = validate_points(points, self.pipeline.min_points)
        feeds, context = self.pipeline.preprocess(finite)
        t1 = time.perf_counter()
        outputs = self.runner(feeds) if self.runner is not None else {}
        t2 = time.perf_counter()
        scores = self.pipeline.postprocess(finite, context, outputs)
        score = object_score(finite, scores, self.object_k)
        t3 = time.perf_counter()
        if len(finite) != len(points):
            full = np.full(len(points), np.nan, dtype=np.float32)
            full[keep] = scores
            scores = full
        anomalous = None if self.threshold is None else bool(score > self.threshold)
        ms = {"preprocess": t1 - t0, "network": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0}
        return DetectionResult(
            score=score, point_scores=scores.astype(np.float32, copy=False), threshold=self.threshold,
            anomalous=anomalous, timings_ms={k: v * 1e3 for k, v in ms.items()},
            n_dropped=int(len(points) - len(finite)),
        )
