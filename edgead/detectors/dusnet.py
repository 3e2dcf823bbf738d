"""DUS-Net pipeline (torch-free): alignment, normalisation, FPS + KNN grouping, and eqs. 15-17 scoring.

The network (``edgead.models.dusnet``) maps fixed-size ``patches`` (G, K, 3) and ``centers`` (G, 3) to an
anomaly-free reconstruction ``recon`` (G * gamma, 3) in the normalised frame. Everything else lives here, so every
backend shares it. Shapes never depend on the frame: clouds with fewer than G (or K) points repeat centres
(neighbours) cyclically up to G (K); repeats change neither the max-pooled patch features nor the scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from edgead import ops as edge_ops


@dataclass(frozen=True)
class DusNetConfig:
    groups: int = 256  # G: FPS centres (Down-Net tokens)
    group_size: int = 32  # K: neighbours per patch
    gamma: int = 16  # up-sampling rate: reconstructed points per centre
    thin: int = 16384  # stride-thin larger frames to this many points before FPS (0: never)
    alpha: float = 0.08  # Noise-Gen std on centres (normalised units)
    beta: float = 0.15  # Noise-Gen std on neighbours (normalised units)
    pos_dim: int = 64  # C1: centre position embedding
    patch_dim: int = 128  # C2: PointNet patch embedding
    width: int = 128  # C3: transformer width
    depth: int = 3
    heads: int = 4
    up_dim: int = 64  # Up-Net feature width
    up_k: int = 16  # Up-Net set-abstraction neighbours
    down_net: bool = True  # False: the Up-Net runs on the FPS centres themselves (ablation "Down-Net -> FPS")
    score: str = "surface"  # eq. 15 distance d: "point" (nearest reconstructed point, literal) or "surface" (docs)
    normal_k: int = 16  # "surface": reconstructed points in each PCA normal estimate
    score_voxel: float = 0.015  # score one point per voxel of this edge (normalised) and spread it; 0: every point
    calibrate: bool = False  # subtract the training scans' reconstruction error near each point (measured: worse)
    align: bool = True  # ICP-align each frame to the stored training reference before normalising
    icp_points: int = 2048  # frame subsample used for ICP
    emd_eps: float = 0.1  # per-patch Sinkhorn: entropy (relative to the mean cost) and iterations
    emd_iters: int = 10
    steps_down: int = 2000  # measured (docs/dusnet.md): 200 + 100 steps left points at chance; ~330 s on 2 cores
    steps_up: int = 1000
    batch: int = 4
    lr: float = 1e-3
    pool: int = 96  # augmented training samples generated per run (Noise-Gen adds fresh noise every step)


PRESETS = {
    "cpu": DusNetConfig(),
    "paper": DusNetConfig(groups=8192, group_size=512, gamma=8, thin=0, pos_dim=384, patch_dim=384, width=384,
                          depth=4, heads=6, up_dim=128, up_k=32, steps_down=20000, steps_up=20000, batch=4, pool=256,
                          score="point", score_voxel=0.0),
    "tiny": DusNetConfig(groups=64, group_size=16, gamma=8, thin=2048, pos_dim=16, patch_dim=32, width=32, depth=1,
                         heads=2, up_dim=16, up_k=8, icp_points=512, steps_down=30, steps_up=30, lr=3e-3, pool=8),
}


def preset(name: str) -> DusNetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown dusnet preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


class Pipeline:
    kind = "dusnet"
    min_points = 4  # 3 neighbours for eq. 16 come from the reconstruction; ICP needs a few points

    def __init__(self, config: DusNetConfig, normalization: edge_ops.Normalization,
                 reference: np.ndarray | None = None, baseline: np.ndarray | None = None, ops=edge_ops):
        self.config = config
        self.normalization = normalization
        self.reference = None if reference is None or len(reference) == 0 else reference.astype(np.float32)
        self.reference_normals = None if self.reference is None else edge_ops.estimate_normals(self.reference)
        # (M,) sensor-unit score that normal training scans get near each reference point (empty: not calibrated)
        self.baseline = None if baseline is None or len(baseline) == 0 else baseline.astype(np.float32)
        self.ops = ops  # farthest_point_sample, group, knn, nearest_distance: swappable for CUDA kernels

    # ---- frame -> normalised model frame
    def to_model_frame(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) sensor units -> (N, 3) float32 normalised, aligned to the training reference when it has one."""
        reference = self.reference if self.config.align else None
        return edge_ops.to_model_frame(points, self.normalization, reference, self.config.icp_points,
                                       self.reference_normals)

    def group(self, x: np.ndarray, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) normalised points -> patches (G, K, 3) relative to their centres, centers (G, 3); fixed shapes."""
        g, k = self.config.groups, self.config.group_size
        idx = self.ops.farthest_point_sample(x, min(g, len(x)), start)
        centers = x[idx[np.arange(g) % len(idx)]]
        patches, _ = self.ops.group(x, centers, min(k, len(x)))
        if patches.shape[1] < k:
            patches = patches[:, np.arange(k) % patches.shape[1]]
        return patches.astype(np.float32), centers.astype(np.float32)

    def thin(self, x: np.ndarray) -> np.ndarray:
        return x if not self.config.thin else x[edge_ops.stride_subsample(len(x), self.config.thin)]

    # ---- Pipeline protocol
    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = self.to_model_frame(points)
        patches, centers = self.group(self.thin(x))
        return {"patches": patches, "centers": centers}, x

    def postprocess(self, points: np.ndarray, context: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        cfg = self.config
        scores = edge_ops.score_by_voxel(
            context, cfg.score_voxel, lambda x: score_points(x, outputs["recon"], cfg.score, cfg.normal_k, self.ops))
        scores = scores * np.float32(self.normalization.scale)
        if self.config.calibrate and self.baseline is not None:
            _, idx = self.ops.knn(context, self.reference, 1)
            scores = scores - self.baseline[idx[:, 0]]
        return scores

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"kind": self.kind, "config": asdict(self.config), "normalization": self.normalization.to_dict()}
        empty = np.zeros((0, 3), np.float32)
        return meta, {"reference": empty if self.reference is None else self.reference,
                      "baseline": empty[:, 0] if self.baseline is None else self.baseline}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Pipeline:
        config = replace(DusNetConfig(), **meta["config"])
        return cls(config, edge_ops.Normalization(**meta["normalization"]), arrays.get("reference"),
                   arrays.get("baseline"))


def score_points(x: np.ndarray, recon: np.ndarray, score: str = "point", normal_k: int = 16,
                 ops=edge_ops) -> np.ndarray:
    """Eqs. 15-16. (N, 3) query, (M, 3) reconstruction -> (N,) float32 point scores (same units as the inputs).

    s_i = distance d to the nearest reconstructed point, reweighted by 1 - softmax over the 3 nearest. With
    ``score="surface"`` each d is the distance to the tangent plane at that reconstructed point (normals by PCA of
    its ``normal_k`` neighbours in the reconstruction), so normal points between reconstructed points score ~0
    instead of ~half the reconstruction's point spacing.
    """
    if score not in ("point", "surface"):
        raise ValueError(f"dusnet score must be 'point' or 'surface', got {score!r}")
    recon = np.asarray(recon, dtype=np.float32).reshape(-1, 3)
    d, idx = ops.knn(x, recon, min(3, len(recon)))
    cols = [d[:, j] for j in range(d.shape[1])]  # column-wise: axis-1 reductions over (N, 3) are slow in numpy
    if score == "surface" and len(recon) >= 3:
        normals = edge_ops.estimate_normals(recon, normal_k)
        offset = np.einsum("mc,mc->m", recon, normals)  # each tangent plane as n . p = offset
        cols = [np.abs(np.einsum("nc,nc->n", x, normals[i]) - offset[i]) for i in idx.T]
    top = np.maximum.reduce(cols)  # stable softmax
    e = [np.exp(c - top) for c in cols]
    weight = 1 - e[0] / sum(e)
    return (weight * cols[0]).astype(np.float32)
