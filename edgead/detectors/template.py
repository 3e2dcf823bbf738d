"""``template``: the golden-sample baseline a line engineer tries first.

Training aligns every normal scan to the first one (ICP), merges them and thins the union to a reference cloud of
bounded size. Inference aligns the test scan to the reference (bounding-box centres, then trimmed ICP on a
subsample) and scores each point by its distance to the nearest reference point, in sensor units (mm): no network,
no normalisation, so the scores mean what they say. The object score is the maximum.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pykdtree.kdtree import KDTree

from edgead import ops


@dataclass
class TemplateConfig:
    max_reference: int = 100_000  # reference points kept after voxel thinning
    align_points: int = 4096  # test points (stride subsample) used for ICP
    icp_iters: int = 30  # point-to-plane ICP converges in well under 10 on parts with small pose changes
    trim: float = 0.9  # fraction of closest pairs each ICP step fits, so defects do not pull the pose


@dataclass
class Pipeline:
    reference: np.ndarray  # (M, 3) float32, sensor units, in the frame of the first training scan
    normals: np.ndarray  # (M, 3) float32 unit normals of the reference, for point-to-plane ICP
    config: TemplateConfig = field(default_factory=TemplateConfig)
    tree: KDTree = field(init=False, repr=False, compare=False)  # over the reference, built once, not per frame
    kind = "template"
    min_points = 32  # ICP needs enough points for a stable pose

    def __post_init__(self):
        self.tree = KDTree(self.reference)

    def align(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) -> R (3, 3), t (3,) mapping the frame onto the reference as ``points @ R.T + t``."""
        sub = points[ops.stride_subsample(len(points), self.config.align_points)]
        return ops.rigid_icp(sub, self.reference, iters=self.config.icp_iters, trim=self.config.trim,
                             normals=self.normals, tree=self.tree)

    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        return {}, self.align(points)

    def postprocess(self, points: np.ndarray, context, outputs: dict[str, np.ndarray]) -> np.ndarray:
        r, t = context
        dist, _ = self.tree.query(np.ascontiguousarray(points @ r.T + t, dtype=np.float32), k=1)
        return dist.astype(np.float32)  # = ops.nearest_distance, without rebuilding the tree

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"kind": self.kind, **asdict(self.config)}, {"reference": self.reference, "normals": self.normals}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Pipeline:
        ref, nrm = arrays.get("reference"), arrays.get("normals")
        if ref is None or nrm is None or ref.ndim != 2 or ref.shape[1] != 3 or nrm.shape != ref.shape:
            raise ValueError("template pipeline state needs 'reference' and 'normals' arrays of one shape (M, 3)")
        known = TemplateConfig.__dataclass_fields__
        return cls(np.ascontiguousarray(ref, dtype=np.float32), np.ascontiguousarray(nrm, dtype=np.float32),
                   TemplateConfig(**{k: v for k, v in meta.items() if k in known}))


def voxel_thin(points: np.ndarray, max_points: int) -> np.ndarray:
    """Replace the points in each cubic voxel by their mean, with the voxel size grown until at most ``max_points``
    remain. (N, 3) -> (M, 3) float32, M <= max_points. Averaging also cancels part of the sensor noise."""
    if len(points) <= max_points:
        return points.astype(np.float32)
    extent = float(np.ptp(points, axis=0).max())
    size = extent / np.sqrt(max_points)  # a surface of the bounding box's size: ~max_points voxels
    while True:
        keys = np.floor((points - points.min(0)) / size).astype(np.int64)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        if len(counts) <= max_points:
            break
        size *= max(1.02, np.sqrt(len(counts) / max_points))  # voxels on a surface scale as size^-2
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse.ravel(), points)
    return (sums / counts[:, None]).astype(np.float32)


def build_reference(clouds: list[np.ndarray], config: TemplateConfig) -> np.ndarray:
    """Align every training cloud to the first, merge and thin. list of (N_i, 3) -> (M, 3) float32."""
    if not clouds:
        raise ValueError("template: no training clouds")
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    clouds = [c[np.isfinite(c).all(1)] for c in clouds]
    for i, c in enumerate(clouds):
        if len(c) < Pipeline.min_points:
            raise ValueError(f"template: training cloud {i} has {len(c)} finite points, need {Pipeline.min_points}")
    first = clouds[0]
    normals = ops.estimate_normals(first)
    merged = [first]
    for c in clouds[1:]:
        sub = c[ops.stride_subsample(len(c), 4 * config.align_points)]
        r, t = ops.rigid_icp(sub, first, iters=config.icp_iters, trim=config.trim, normals=normals)
        merged.append(c @ r.T + t)
    return voxel_thin(np.concatenate(merged), config.max_reference)


def train(clouds: list[np.ndarray], out: Path, opts=None, config: TemplateConfig | None = None) -> Pipeline:
    """Fit the reference cloud and write the run directory (``model.json``, ``pipeline.npz``)."""
    from edgead.detectors import save_pipeline

    config = config or TemplateConfig()
    reference = build_reference(clouds, config)
    pipeline = Pipeline(reference, ops.estimate_normals(reference), config)
    meta, arrays = pipeline.state()
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode() + arrays["reference"].tobytes()).hexdigest()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_pipeline(pipeline, out / "model.json", out / "pipeline.npz",
                  extra={"name": "template", "model_hash": digest[:16], "n_train": len(clouds)})
    return pipeline
