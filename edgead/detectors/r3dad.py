"""R3D-AD pipeline (torch-free): normalise and align a frame, subsample it for the network, score its reconstruction.

The network (``edgead.models.r3dad``) maps the fixed-size subsample ``points`` (M, 3) to its anomaly-free
reconstruction ``recon`` (M, 3) in the same frame. Scores are distances between the two (Algorithm 3), computed on
the M points, propagated to every input point and reported in sensor units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from edgead import ops
from edgead.detectors import scoring
from edgead.detectors.inspection import Inspection, ReferenceSurface
from edgead.ops import Normalization


class Distance(StrEnum):
    """The point score: distance to the nearest reconstructed point, or Algorithm 3's cluster distance."""

    NEAREST = "nn"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class Config:
    """Pre- and post-processing of an R3D-AD model (the network's own shape is ``edgead.models.r3dad.Arch``)."""

    num_points: int = 1024  # M: the network's fixed input size (paper: 4096 Real3D-AD, 2048 Anomaly-ShapeNet)
    score: Distance = Distance.NEAREST
    k: int = 8  # neighbours of the cluster distance
    score_voxel: float = 0.015  # score one point per voxel of this edge (normalised) and spread it; 0: every point
    align: bool = True  # rigidly align each frame to the stored training reference (ICP) before subsampling
    ref_points: int = 2048  # size of that reference, and of the frame subsample ICP runs on
    scoring: scoring.Scoring = field(default_factory=scoring.Scoring)  # robust-scoring rules 1 and 3 (unsigned)

    def __post_init__(self):
        object.__setattr__(self, "score", Distance(self.score))

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score.value}


FPS_POOL = 4  # FPS picks M points from a pool of FPS_POOL * M, at test time as in the training views


def subsample_indices(points: np.ndarray, m: int, geometry: ops.GeometryOps = ops.CPU) -> np.ndarray:
    """(N, 3) -> (m,) int64: exact FPS (start 0) after a stride thinning to FPS_POOL m; repeats indices when N < m.

    The pool matches the training views' (measured on 5 categories against a 32 m pool: mean P-AUROC 0.561 vs
    0.560, object AUROC at chance either way, FPS 8x cheaper; docs/performance.md)."""
    pre = ops.stride_subsample(len(points), FPS_POOL * m)
    if len(pre) < m:
        return pre[np.arange(m) % len(pre)]
    return pre[geometry.farthest_point_sample(points[pre], m, 0)]


def cluster_distance(points: np.ndarray, recon: np.ndarray, k: int,
                     geometry: ops.GeometryOps = ops.CPU) -> np.ndarray:
    """Algorithm 3's score: the k-NN cluster of each input point compared with the same cluster reconstructed.

    (M, 3), (M, 3) -> (M,). The reconstruction is aligned with the input point by point (point i of ``recon``
    descends from point i of ``points``), so cluster_i = the k nearest input points of p_i and its reconstruction
    is the same indices in ``recon``; the score is the root mean squared displacement over the cluster. Averaging
    over a cluster keeps an isolated flying pixel from outscoring a real defect of many points.
    """
    idx = geometry.knn(points, points, min(k, len(points))).idx
    d2 = ((points - recon) ** 2).sum(1)
    return np.sqrt(d2[idx].mean(1)).astype(np.float32)


def propagate(points: np.ndarray, sub: np.ndarray, sub_scores: np.ndarray,
              geometry: ops.GeometryOps = ops.CPU) -> np.ndarray:
    """Scores on the subsample (M,) -> every point (N,): inverse-distance weights over the 3 nearest sub points."""
    k = min(3, len(sub))
    dist, idx = geometry.knn(points, sub, k)
    w = 1.0 / np.maximum(dist, 1e-8)
    return ((w * sub_scores[idx]).sum(1) / w.sum(1)).astype(np.float32)


class Pipeline:
    kind = "r3dad"
    min_points = 16

    def __init__(self, config: Config, normalization: Normalization, reference: np.ndarray,
                 geometry: ops.GeometryOps = ops.CPU):
        self.config, self.normalization = config, normalization
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)  # (R, 3) training reference, normalised
        self.reference_normals = ops.estimate_normals(self.reference)
        # ICP looks its correspondences up in a grid over the fixed reference (~1 s to build here, at load)
        tree = cKDTree(self.reference)
        self.index = ops.NearestIndex(self.reference, tree, ops.reference_grid(self.reference))
        self.surface = ReferenceSurface(self.reference, tree)
        self.geometry = geometry

    def to_model_frame(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) sensor units -> (N, 3) normalised frame: bbox centre at 0, fixed training scale, ICP to reference.

        The scale stays fixed from training so that a defect keeps its size; the centre is per frame (arbitrary
        offsets), and alignment to a stored reference removes the pose difference the encoder would otherwise see.
        """
        reference = self.reference if self.config.align else None
        return ops.to_model_frame(points, self.normalization, reference, self.config.ref_points,
                                  self.reference_normals, self.index)

    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], Any, Inspection]:
        x = self.to_model_frame(points)
        inspection = self.surface.inspect(x)
        sub = np.ascontiguousarray(x[subsample_indices(x, self.config.num_points, self.geometry)])
        return {"points": sub}, (x, sub), inspection

    def postprocess(self, points: np.ndarray, context: Any, outputs: dict[str, np.ndarray]) -> np.ndarray:
        x, sub = context
        recon = np.asarray(outputs["recon"], dtype=np.float32).reshape(sub.shape)
        if self.config.score is Distance.CLUSTER:
            s = cluster_distance(sub, recon, self.config.k, self.geometry)
        else:
            s = self.geometry.nearest_distance(sub, recon)
        scores = ops.score_by_voxel(x, self.config.score_voxel, lambda q: scoring.robust_scores(
            q, lambda y: (propagate(y, sub, s, self.geometry), None), self.config.scoring, self.geometry))
        return scores * np.float32(self.normalization.scale)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"config": self.config.to_dict(), "normalization": self.normalization.to_dict()}
        return meta, {"reference": self.reference}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray], geometry: ops.GeometryOps = ops.CPU) -> Pipeline:
        return cls(Config(**scoring.stored(meta["config"])), Normalization(**meta["normalization"]),
                   arrays["reference"], geometry)
