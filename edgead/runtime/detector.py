"""The detector API every consumer uses: ``EdgeDetector.load(path).detect(points)``.

A detector is a torch-free :class:`~edgead.detectors.Pipeline` (pre- and post-processing in numpy, or CUDA on the
TensorRT path) around a network *runner*: a function from named input arrays to named output arrays. The runner is
the only part that differs between backends (PyTorch eager, ONNX Runtime, TensorRT), so every backend shares one
definition of grouping and scoring.

A frame the detector cannot judge raises :class:`~edgead.detectors.NotInspected` (a ``ValueError``): an embedding
controller cannot mistake it for a pass, and ``DetectionResult.passed`` is true only for a judged frame under a set
threshold.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgead import ops
from edgead.detectors import NotInspected, build_pipeline
from edgead.formats.rundir import read_run
from edgead.formats.threshold import read_threshold
from edgead.runtime import onnx_backend, torch_backend, trt_backend
from edgead.runtime.runner import Backend, Loaded, Runner

MAX_POINTS = 5_000_000  # a frame larger than this is a sensor or framing error, not a part
OBJECT_K = 16  # object score: max over points of the mean point score of their OBJECT_K nearest neighbours
OBJECT_POINTS = 16384  # ... computed on a stride subsample of at most this many points


@dataclass
class DetectionResult:
    score: float  # object-level anomaly score (see object_score)
    point_scores: np.ndarray  # (N,) float32, one per input point in input order; NaN for dropped points
    threshold: float | None
    anomalous: bool | None  # None when no threshold is set
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage: preprocess, network, postprocess, total
    n_dropped: int = 0  # input rows with NaN/Inf coordinates, dropped before inference
    coverage: float = 0.0  # share of the part's surface cells the frame reached (the not-inspected rule)
    fitness: float = 0.0  # share of its points that fit the reference after alignment

    @property
    def passed(self) -> bool:
        """True only for a good part: a threshold was set and the score is within it."""
        return self.anomalous is False


def validate_points(points, min_points: int, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Check a frame and drop non-finite rows. Returns (finite points (M, 3) float32, keep mask (N,) bool).

    Takes any array-like of numbers (lists, torch tensors through ``np.asarray``). Raises ValueError naming the
    problem (type, dtype, shape, size) and NotInspected when too few finite points remain.
    """
    try:
        arr = np.asarray(points)
    except Exception as exc:  # ragged lists, objects numpy cannot take
        raise ValueError(f"points must be an (N, 3) array of numbers, got {type(points).__name__} ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"points must be numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 3:
        hint = " (transposed? this is (3, N))" if arr.ndim == 2 and arr.shape[0] == 3 else ""
        raise ValueError(f"points must have shape (N, 3), got {arr.shape}{hint}")
    if len(arr) > max_points:
        raise ValueError(f"frame has {len(arr)} points, more than the limit of {max_points}")
    with np.errstate(over="ignore"):  # a float64 row beyond float32's range becomes inf: dropped like NaN rows
        pts = np.ascontiguousarray(arr, dtype=np.float32)
    if np.isfinite(pts.sum(dtype=np.float64)):  # fast path: a sum is finite only if every value is
        keep = np.ones(len(pts), dtype=bool)
    else:
        keep = np.isfinite(pts).all(axis=1)
    n_valid = int(keep.sum())
    if n_valid < min_points:
        what = "no points" if len(pts) == 0 else f"{n_valid} finite points of {len(pts)}"
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
    return neighbourhood_max(scores, object_neighbourhoods(points, k))


def object_neighbourhoods(points: np.ndarray, k: int = OBJECT_K) -> Neighbourhoods | None:
    """The part of :func:`object_score` that depends on the points alone (their positions, in any rigid frame):
    the stride subsample and each subsample point's k nearest neighbours in it; None for ``k <= 1``."""
    if k <= 1:
        return None
    sub = ops.stride_subsample(len(points), OBJECT_POINTS)
    x = points[sub]
    return Neighbourhoods(sub, ops.knn(x, x, min(k, len(x))).idx)


def neighbourhood_max(scores: np.ndarray, hood: Neighbourhoods | None) -> float:
    """Max over the subsample of the mean score of each neighbourhood (no neighbourhoods: the plain max).
    (N,) -> float."""
    if hood is None:
        return float(scores.max())
    return float(scores[hood.sub][hood.idx].mean(1).max())


class Neighbourhoods(NamedTuple):
    sub: np.ndarray  # (S,) int64 the stride subsample, indices into the frame
    idx: np.ndarray  # (S, k) int64 each subsample point's nearest neighbours, indices into ``sub``


class EdgeDetector:
    """One loaded detector. Not thread-safe: give each thread its own (backends hold reusable buffers)."""

    def __init__(self, pipeline, runner: Runner | None, *, backend: Backend, name: str = "", model_hash: str = "",
                 threshold: float | None = None, object_k: int = OBJECT_K):
        # the object score's neighbourhoods need only the points: found on a second core while the network and
        # postprocess run
        self._neighbourhoods = ThreadPoolExecutor(1, thread_name_prefix="edgead-object")
        self.pipeline = pipeline
        self.runner = runner
        self.backend = Backend(backend)
        self.name = name or pipeline.kind
        self.model_hash = model_hash
        self.threshold = threshold
        self.object_k = object_k  # 1: the papers' plain max of the point scores

    @classmethod
    def load(cls, path, *, threshold=None, device: str = "cpu") -> EdgeDetector:
        """Load a run directory (PyTorch, or numpy for ``template``), an ``.onnx`` engine or a ``.plan`` engine,
        after verifying its content hash.

        ``threshold``: a number, or a calibration file made for this very model (refused otherwise); without it,
        ``anomalous`` stays None. ``device`` applies to run directories ("cpu", "cuda") and ONNX ("cpu", "cuda").
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such engine or run directory")
        loaded = load_backend(path, device)
        det = cls(loaded.pipeline, loaded.runner, backend=loaded.backend, name=loaded.name,
                  model_hash=loaded.model_hash)
        det.threshold = resolve_threshold(threshold, det.model_hash)
        return det

    def detect(self, points) -> DetectionResult:
        """Score one frame: (N, 3) points in sensor units (mm). Raises ValueError for an unusable frame and
        NotInspected (a ValueError) for one that cannot be judged; never returns a pass for either."""
        t0 = time.perf_counter()
        finite, keep = validate_points(points, self.pipeline.min_points)
        feeds, context, inspection = self.pipeline.preprocess(finite)
        # after the not-inspected rule: a refused frame (a stuck sensor's one point repeated) costs no neighbours
        hood = self._neighbourhoods.submit(object_neighbourhoods, finite, self.object_k)
        t1 = time.perf_counter()
        try:
            outputs = self.runner(feeds) if self.runner is not None else {}
            t2 = time.perf_counter()
            scores = self.pipeline.postprocess(finite, context, outputs)
        finally:
            wait([hood])  # never left running into the next frame
        score = neighbourhood_max(scores, hood.result())
        t3 = time.perf_counter()
        if len(finite) != len(keep):
            full = np.full(len(keep), np.nan, dtype=np.float32)
            full[keep] = scores
            scores = full
        anomalous = None if self.threshold is None else bool(score > self.threshold)
        ms = {"preprocess": t1 - t0, "network": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0}
        return DetectionResult(
            score=score, point_scores=scores.astype(np.float32, copy=False), threshold=self.threshold,
            anomalous=anomalous, timings_ms={k: v * 1e3 for k, v in ms.items()},
            n_dropped=int(len(keep) - len(finite)), coverage=inspection.coverage, fitness=inspection.fitness,
        )


def load_backend(path: Path, device: str = "cpu") -> Loaded:
    """The pipeline and runner of a run directory, ``.onnx`` or ``.plan`` engine (verified)."""
    if path.is_dir():
        run = read_run(path)
        pipeline = build_pipeline(run.kind, run.pipeline, run.arrays)
        if run.arch is None:  # template: no network
            return Loaded(pipeline, None, Backend.NUMPY, run.name, run.model_hash)
        return Loaded(pipeline, torch_backend.load_runner(run, device), Backend.TORCH, run.name, run.model_hash)
    if path.suffix == ".onnx":
        return onnx_backend.load(path, device)
    if path.suffix == ".plan":
        return trt_backend.load(path, device)
    raise ValueError(f"{path}: not an engine (.onnx, .plan) or a run directory")


def resolve_threshold(source, model_hash: str) -> float | None:
    """A threshold from a number (or a string of one, as command lines give it), or from a calibration file
    recorded for ``model_hash``."""
    if source is None:
        return None
    if isinstance(source, (int, float)) and not isinstance(source, bool):
        return float(source)
    if isinstance(source, str):
        try:
            return float(source)
        except ValueError:
            pass
    return read_threshold(Path(source), model_hash)


__all__ = ["MAX_POINTS", "DetectionResult", "EdgeDetector", "NotInspected", "object_score", "validate_points"]
