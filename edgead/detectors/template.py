"""``template``: the golden-sample detector a line engineer tries first.

Training (``edgead.train.template``) aligns every normal scan to the first one (ICP), merges them and thins the
union to a reference cloud of bounded size. Inference aligns the test scan to the reference (bounding-box centres,
then trimmed point-to-plane ICP on a subsample, restarted from a few perturbed poses when the fit is worse than the
training scans' fits) and scores each point by its distance to the nearest reference point, in sensor units (mm):
no network, no normalisation, so the scores mean what they say. The object score is
``edgead.runtime.detector.object_score``.

The reference never changes, so training also stores a sparse grid around it (``ops.NearestGrid``) whose cells
list the few reference points that can be nearest to any point inside them: registration and scoring look points
up there and ask a k-d tree only for the points the grid cannot certify (far from the part, or a crowded cell),
so the scores are the exact nearest distances either way. Without a stored grid (older run directories) every
query goes to the tree.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from edgead import ops
from edgead.detectors import scoring
from edgead.detectors.inspection import Inspection, ReferenceSurface

GRID = "grid"  # prefix of the nearest-point grid's arrays in the pipeline state


@dataclass
class TemplateConfig:
    align_points: int = 4096  # test points (stride subsample) used for ICP
    coarse_points: int = 512  # points used to compare starting poses
    icp_iters: int = 30  # point-to-plane ICP converges in well under 10 on parts with small pose changes
    trim: float = 0.9  # fraction of closest pairs each ICP step fits, so defects do not pull the pose
    restart_iters: int = 30  # ICP from each start converges in far fewer; 10 were too few from 20 degrees off (a gear)
    start_angle: float = 20.0  # degrees: restarts turn the scan by +-this about each axis ...
    start_shift: float = 0.1  # ... and hops also shift it by +-this fraction of the reference's extent
    sweep_step: float = 30.0  # degrees: a fit still poor after the hops tries turns by every multiple of this
    fit_tolerance: float = 0.0  # mm^2: a first fit with a larger residual (see residual) tries the restarts (0: always)
    score_voxel: float = 0.0  # mm: score one point per voxel of this edge and spread it (0: every point; see docs)
    scoring: scoring.Scoring = field(default_factory=scoring.Scoring)  # the robust-scoring rules (see score)


@dataclass
class Pipeline:
    reference: np.ndarray  # (M, 3) float32, sensor units, in the frame of the first training scan
    normals: np.ndarray  # (M, 3) float32 unit normals of the reference, for point-to-plane ICP
    config: TemplateConfig = field(default_factory=TemplateConfig)
    grid: ops.NearestGrid | None = field(default=None, repr=False, compare=False)  # stored at training
    # Nearest reference points for ICP, the fit and the scores: the grid, scipy's single-threaded tree for what it
    # cannot certify (ICP's small queries cost a fraction of a millisecond there; an OpenMP tree costs milliseconds
    # per call on a busy CPU).
    index: ops.NearestIndex = field(init=False, repr=False, compare=False)
    surface: ReferenceSurface = field(init=False, repr=False, compare=False)
    kind = "template"
    min_points = 32  # ICP needs enough points for a stable pose

    def __post_init__(self):
        tree = cKDTree(self.reference)
        self.index = ops.NearestIndex(self.reference, tree, self.grid)
        self.surface = ReferenceSurface(self.reference, tree)

    def icp(self, points: np.ndarray, init=None, iters: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Point-to-plane ICP against the reference, correspondences from the grid (a distance-field ICP)."""
        return ops.rigid_icp(points, self.reference, iters=iters or self.config.icp_iters, trim=self.config.trim,
                             normals=self.normals, tree=self.index, init=init, inlier=self.surface.tolerance)

    def residual(self, points: np.ndarray, r: np.ndarray, t: np.ndarray) -> float:
        """Mean squared distance (mm^2) of the posed points to the reference, each capped at the inspection rule's
        fit tolerance: every point counts (a trimmed mean would not see a tenth of the view slid off the part) and
        none counts more than a point that does not fit at all."""
        dist, _ = self.index.query(ops.rigid_transform(points, r, t))
        return capped_mean_square(dist, self.surface.tolerance)

    def starts(self, points: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Starting poses for a frame whose first fit is poor: the scan's bounding box at the reference's box
        centre turned by +-start_angle about each axis, and put against each face and edge of the reference's box
        (a view from one side sees the part's extreme on that side: its box touches the part's there; the corners
        added nothing on the realistic track). A one-sided view's box centre is not the part's, and ICP from there
        can settle in a wrong minimum."""
        c, c_ref = ops.bbox_center(points), ops.bbox_center(self.reference)
        slack = np.maximum(np.ptp(self.reference, axis=0) - np.ptp(points, axis=0), 0) / 2
        eye = np.eye(3, dtype=np.float32)
        out = [(r, c_ref - r @ c) for r in self.turns(self.config.start_angle, -self.config.start_angle)]
        for side in itertools.product((-1.0, 0.0, 1.0), repeat=3):
            if 0 < np.count_nonzero(side) < 3:
                out.append((eye, (c_ref - c + np.array(side) * slack).astype(np.float32)))
        return out

    def hops(self, pose: tuple[np.ndarray, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Poses around a fit that is still poor: shifted by +-start_shift of the part's extent along each axis (a
        view of one face of a plate settles on the plate's other face) or turned by +-start_angle about each axis
        through the reference's box centre (a gear settles a tooth off: it turns about its own axis)."""
        r, t = pose
        shift = self.config.start_shift * float(np.ptp(self.reference, axis=0).max())
        eye = np.eye(3, dtype=np.float32)
        return [(r, t + sign * shift * eye[axis]) for axis in range(3) for sign in (-1.0, 1.0)] + \
            self.turned(pose, self.config.start_angle, -self.config.start_angle)

    def sweep(self, pose: tuple[np.ndarray, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The last resort for a fit still poor after the hops: ``pose`` turned by every multiple of sweep_step
        about each axis through the reference's box centre (a one-sided view of a flat part can settle far from its
        pose: a gear's face 60 degrees off, measured). Empty with sweep_step 0."""
        step = self.config.sweep_step
        return self.turned(pose, *np.arange(step, 360.0, step)) if step > 0 else []

    def turned(self, pose: tuple[np.ndarray, np.ndarray], *angles: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """``pose`` turned by each of ``angles`` (degrees) about each axis through the reference's box centre."""
        r, t = pose
        c = ops.bbox_center(self.reference)
        return [(turn @ r, turn @ (t - c) + c) for turn in self.turns(*angles)]

    def turns(self, *angles: float) -> list[np.ndarray]:
        """The rotations by each of ``angles`` (degrees) about each axis: (3, 3) float32 each."""
        return [ops.axis_angle(np.eye(3)[axis], np.radians(a)).astype(np.float32) for axis in range(3)
                for a in angles]

    def best_fit(self, points: np.ndarray, inits: list, pose: tuple[np.ndarray, np.ndarray], err: float
                 ) -> tuple[tuple[np.ndarray, np.ndarray], float]:
        """ICP from each starting pose; the fit with the lowest residual, ``pose`` (of residual ``err``) included."""
        for init in inits:
            cand = self.icp(points, init, self.config.restart_iters)
            cand_err = self.residual(points, *cand)
            if cand_err < err:
                pose, err = cand, cand_err
        return pose, err

    def align(self, points: np.ndarray, fine_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) -> R (3, 3), t (3,) mapping the frame onto the reference as ``points @ R.T + t``.

        ICP from the bounding-box centres; a fit worse than ``fit_tolerance`` tries the :meth:`starts`, a fit still
        worse the :meth:`hops` around the best so far, and then the :meth:`sweep` (these two only with a learnt
        tolerance: with 0, every frame would pay for all of them). The final ICP uses
        ``fine_points`` (default ``align_points``) of the frame; isolated points (flying pixels,
        ``scoring.isolated``) take no part."""
        sub = alignment_points(points, fine_points or self.config.align_points)
        coarse = sub[ops.stride_subsample(len(sub), self.config.coarse_points)]
        pose = self.icp(coarse)
        err = self.residual(coarse, *pose)
        if err > self.config.fit_tolerance:
            pose, err = self.best_fit(coarse, self.starts(coarse), pose, err)
        poor = self.config.fit_tolerance > 0  # without a learnt tolerance (one training scan), the starts only
        if poor and err > self.config.fit_tolerance:
            pose, err = self.best_fit(coarse, self.hops(pose), pose, err)
        if poor and err > self.config.fit_tolerance:
            pose, err = self.best_fit(coarse, self.sweep(pose), pose, err)
        return self.icp(sub, pose)

    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, Inspection]:
        aligned = ops.rigid_transform(points, *self.align(points))
        return {}, aligned, self.surface.inspect(aligned)

    def postprocess(self, points: np.ndarray, context: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return ops.score_by_voxel(context, self.config.score_voxel, self.score)

    def score(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) aligned points -> (N,) float32 point scores, mm. With every rule of ``edgead.detectors.scoring``
        (the default): the distance to the reference's surface (rule 2: the tangent plane of the nearest reference
        point, signed), averaged over each point's 16 nearest frame points with consistent signs (rule 3), and
        isolated points given their nearest other point's score (rule 1). ``Scoring.off()``: the distance to the
        nearest reference point (:meth:`nearest_reference_distance`), as models stored before these rules."""
        rules = self.config.scoring
        if not rules.surface:
            return scoring.robust_scores(points, lambda x: (self.nearest_reference_distance(x), None), rules)
        return scoring.robust_scores(points, lambda x: scoring.surface_distance(
            x, self.reference, self.normals, self.index, self.surface.spacing), rules)

    def nearest_reference_distance(self, points: np.ndarray) -> np.ndarray:
        """The score: (N, 3) aligned points -> (N,) float32 exact distance (mm) to the nearest reference point,
        as ``ops.point_distance`` computes it (grid candidates, the tree where the grid cannot certify)."""
        return self.index.distance(points)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {"reference": self.reference, "normals": self.normals}
        return {"config": asdict(self.config)}, {**arrays, **(self.grid.arrays(GRID) if self.grid else {})}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray], geometry: ops.GeometryOps = ops.CPU) -> Pipeline:
        """``geometry`` is unused: the reference never changes, so its grid and tree are prepared once (CPU)."""
        ref, nrm = arrays.get("reference"), arrays.get("normals")
        if ref is None or nrm is None or ref.ndim != 2 or ref.shape[1] != 3 or nrm.shape != ref.shape:
            raise ValueError("template pipeline state needs 'reference' and 'normals' arrays of one shape (M, 3)")
        return cls(np.ascontiguousarray(ref, dtype=np.float32), np.ascontiguousarray(nrm, dtype=np.float32),
                   TemplateConfig(**scoring.stored(meta["config"])), ops.NearestGrid.from_arrays(arrays, GRID))


def align_to_first(clouds: list[np.ndarray], config: TemplateConfig) -> list[np.ndarray]:
    """Every training cloud (finite points) aligned to the first, with restarts, as the trainer merges them (and the
    bench's plain k-d tree pass). list of (N_i, 3) -> same."""
    if not clouds:
        raise ValueError("template: no training clouds")
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    clouds = [c[np.isfinite(c).all(1)] for c in clouds]
    for i, c in enumerate(clouds):
        if len(c) < Pipeline.min_points:
            raise ValueError(f"template: training cloud {i} has {len(c)} finite points, need {Pipeline.min_points}")
    first = Pipeline(clouds[0], ops.estimate_normals(clouds[0]), replace(config, fit_tolerance=0.0))
    poses = [first.align(c, 4 * config.align_points) for c in clouds[1:]]  # offline: a finer final fit
    return [clouds[0]] + [(c @ r.T + t).astype(np.float32) for c, (r, t) in zip(clouds[1:], poses, strict=True)]


def alignment_points(points: np.ndarray, n: int) -> np.ndarray:
    """The points ICP runs on: a stride subsample of ``n`` points less its isolated points (``scoring.isolated``:
    flying pixels would pull the pose and inflate the residual). (N, 3) -> (M, 3), M <= n."""
    sub = points[ops.stride_subsample(len(points), n)]
    return sub[~scoring.isolated(sub)]


def capped_mean_square(dist: np.ndarray, cap: float) -> float:
    """Mean of the squared distances, each capped at ``cap``. (M,) -> float."""
    return float(np.mean(np.minimum(dist.astype(np.float64), cap) ** 2))
