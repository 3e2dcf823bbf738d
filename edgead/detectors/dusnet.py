"""DUS-Net pipeline (torch-free): alignment, normalisation, FPS + KNN grouping, and eqs. 15-17 scoring.

The network (``edgead.models.dusnet``) maps fixed-size ``patches`` (G, K, 3) and ``centers`` (G, 3) to an
anomaly-free reconstruction ``recon`` (G * gamma, 3) in the normalised frame. Everything else lives here, so every
backend shares it. Shapes never depend on the frame: clouds with fewer than G (or K) points repeat centres
(neighbours) cyclically up to G (K); repeats change neither the max-pooled patch features nor the scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
from scipy.spatial import cKDTree

from edgead import ops
from edgead.detectors import scoring
from edgead.detectors.inspection import Inspection, ReferenceSurface


class Distance(StrEnum):
    """The eq. 15 distance d: to the nearest reconstructed point (the paper, literally), or to the tangent plane at
    it (``docs/dusnet.md``: normal points between reconstructed points then score ~0)."""

    POINT = "point"
    SURFACE = "surface"


@dataclass(frozen=True)
class Config:
    """Pre- and post-processing of a DUS-Net model (the network's own shape is ``edgead.models.dusnet.Arch``)."""

    groups: int = 256  # G: FPS centres (Down-Net tokens)
    group_size: int = 32  # K: neighbours per patch
    thin: int = 16384  # stride-thin larger frames to this many points before FPS (0: never)
    score: Distance = Distance.SURFACE
    normal_k: int = 16  # surface distance: reconstructed points in each PCA normal estimate
    score_voxel: float = 0.015  # score one point per voxel of this edge (normalised) and spread it; 0: every point
    calibrate: bool = False  # subtract the training scans' reconstruction error near each point (measured: worse)
    align: bool = True  # ICP-align each frame to the stored training reference before normalising
    icp_points: int = 2048  # frame subsample used for ICP
    scoring: scoring.Scoring = field(default_factory=scoring.Scoring)  # robust-scoring rules 1 and 3 (unsigned)

    def __post_init__(self):
        object.__setattr__(self, "score", Distance(self.score))

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score.value}


class Pipeline:
    kind = "dusnet"
    min_points = 4  # 3 neighbours for eq. 16 come from the reconstruction; ICP needs a few points

    def __init__(self, config: Config, normalization: ops.Normalization, reference: np.ndarray,
                 baseline: np.ndarray | None = None, geometry: ops.GeometryOps = ops.CPU):
        self.config = config
        self.normalization = normalization
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)  # (R, 3) training reference, normalised
        self.reference_normals = ops.estimate_normals(self.reference)
        # ICP looks its correspondences up in a grid over the fixed reference (~1 s to build here, at load)
        tree = cKDTree(self.reference)
        self.index = ops.NearestIndex(self.reference, tree, ops.reference_grid(self.reference))
        self.surface = ReferenceSurface(self.reference, tree)
        # (R,) sensor-unit score that normal training scans get near each reference point (empty: not calibrated)
        self.baseline = None if baseline is None or len(baseline) == 0 else baseline.astype(np.float32)
        self.geometry = geometry

    # ---- frame -> normalised model frame
    def to_model_frame(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) sensor units -> (N, 3) float32 normalised, aligned to the training reference when configured."""
        reference = self.reference if self.config.align else None
        return ops.to_model_frame(points, self.normalization, reference, self.config.icp_points,
                                  self.reference_normals, self.index)

    def group(self, x: np.ndarray, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) normalised points -> patches (G, K, 3) relative to their centres, centers (G, 3); fixed shapes."""
        g, k = self.config.groups, self.config.group_size
        idx = self.geometry.farthest_point_sample(x, min(g, len(x)), start)
        centers = x[idx[np.arange(g) % len(idx)]]
        patches = self.geometry.group(x, centers, min(k, len(x))).patches
        if patches.shape[1] < k:
            patches = patches[:, np.arange(k) % patches.shape[1]]
        return patches.astype(np.float32), centers.astype(np.float32)

    def thin(self, x: np.ndarray) -> np.ndarray:
        return x if not self.config.thin else x[ops.stride_subsample(len(x), self.config.thin)]

    # ---- Pipeline protocol
    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, Inspection]:
        x = self.to_model_frame(points)
        inspection = self.surface.inspect(x)
        patches, centers = self.group(self.thin(x))
        return {"patches": patches, "centers": centers}, x, inspection

    def postprocess(self, points: np.ndarray, context: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        cfg = self.config
        def score(x: np.ndarray) -> np.ndarray:
            return scoring.robust_scores(
                x, lambda q: (score_points(q, outputs["recon"], cfg.score, cfg.normal_k, self.geometry), None),
                cfg.scoring, self.geometry)

        scores = ops.score_by_voxel(context, cfg.score_voxel, score)
        scores = scores * np.float32(self.normalization.scale)
        if cfg.calibrate and self.baseline is not None:
            scores = scores - self.baseline[self.geometry.knn(context, self.reference, 1).idx[:, 0]]
        return scores

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"config": self.config.to_dict(), "normalization": self.normalization.to_dict()}
        return meta, {"reference": self.reference,
                      "baseline": np.zeros(0, np.float32) if self.baseline is None else self.baseline}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray], geometry: ops.GeometryOps = ops.CPU) -> Pipeline:
        return cls(Config(**scoring.stored(meta["config"])), ops.Normalization(**meta["normalization"]),
                   arrays["reference"], arrays.get("baseline"), geometry)


def score_points(x: np.ndarray, recon: np.ndarray, score: Distance = Distance.POINT, normal_k: int = 16,
                 geometry: ops.GeometryOps = ops.CPU) -> np.ndarray:
    """Eqs. 15-16. (N, 3) query, (M, 3) reconstruction -> (N,) float32 point scores (same units as the inputs).

    s_i = distance d to the nearest reconstructed point, reweighted by 1 - softmax over the 3 nearest. With
    ``score="surface"`` each d is the distance to the tangent plane at that reconstructed point (normals by PCA of
    its ``normal_k`` neighbours in the reconstruction), so normal points between reconstructed points score ~0
    instead of ~half the reconstruction's point spacing.
    """
    score = Distance(score)
    recon = np.asarray(recon, dtype=np.float32).reshape(-1, 3)
    d, idx = geometry.knn(x, recon, min(3, len(recon)))
    cols = [d[:, j] for j in range(d.shape[1])]  # column-wise: axis-1 reductions over (N, 3) are slow in numpy
    if score is Distance.SURFACE and len(recon) >= 3:
        normals = ops.estimate_normals(recon, normal_k)
        offset = np.einsum("mc,mc->m", recon, normals)  # each tangent plane as n . p = offset
        cols = [np.abs(np.einsum("nc,nc->n", x, normals[i]) - offset[i]) for i in idx.T]
    top = np.maximum.reduce(cols)  # stable softmax
    e = [np.exp(c - top) for c in cols]
    weight = 1 - e[0] / sum(e)
    return (weight * cols[0]).astype(np.float32)
