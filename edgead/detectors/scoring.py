"""Robust point scores, shared by every detector and backend: what sensor artefacts may not do to a score.

A detector's raw point score says how far each point of a frame is from what a good part looks like. On a real
depth camera's frames that raw score is also high where the sensor, not the part, is wrong. The rules here, applied
in every pipeline's ``postprocess`` (and the first one also in the template's alignment):

1. **Isolated points are not judged on their own.** A flying pixel (a depth between the two sides of an occlusion
   edge), a stray return or a speck of dust is not part of a surface: its neighbourhood in the frame is much
   sparser than the surface's. A point whose ``ISOLATION_K``-th nearest neighbour is more than ``ISOLATION_FACTOR``
   times farther than the frame's median such distance (a local density under a quarter of the typical surface's)
   is *isolated*: it takes the score of the nearest point that is not, i.e. the judgement of the surface it hangs
   off. A defect is a surface (a patch of the frame as dense as the rest) and keeps its own score.
2. **Distance to the surface, not to its samples** (detectors with a reference surface: ``template``). A point on
   the part between two reference samples is up to half a sample spacing from the nearest one, which is as much as
   a small defect. The score is the distance to the tangent plane of the nearest reference sample, plus how far
   the point lies beyond that sample sideways by more than the reference's spacing (off the end of a sheet):
   ``d = sign(s) * sqrt(s^2 + max(0, |t| - h)^2)`` with ``s = n . (p - r)`` and ``t = p - r - s n`` for the nearest
   sample ``r``, its unit normal ``n`` and the reference's median spacing ``h``. Signed: in front of the surface or
   behind it.
3. **A defect is a patch, sensor noise is not.** Each point's score is the mean of the scores of its
   ``neighbours`` nearest frame points (itself included, isolated points left out). Range noise is independent
   from point to point: its mean over k points shrinks by sqrt(k), while a defect (a patch of hundreds of points at
   these sizes) keeps its depth. Signed scores (rule 2) are averaged with each neighbour's sign made consistent
   with the point's own surface normal (reference normals have arbitrary signs), so noise averages towards 0,
   not towards its mean absolute value; the score is the absolute value of that mean. Unsigned scores (the
   networks' reconstruction distances) are averaged as they are.

On a frame of more than NEIGHBOUR_POOL points the rules run on one representative point per voxel, the voxels
sized so that at most that many are occupied (a neighbourhood then covers the same share of the part at any sensor
resolution), and every point takes its voxel representative's score.

Scores stay in the detector's units (mm for ``template``): a score of 0.4 means the surface around that point lies
0.4 mm off the golden sample, on average over its 16 nearest points. Each model stores which rules it applies
(:class:`Scoring`, part of its pipeline configuration); models stored before these rules keep their raw scores.
Measured rule by rule in ``docs/evaluation.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgead import ops

ISOLATION_K = 8  # the neighbour whose distance measures a point's local density
ISOLATION_FACTOR = 2.0  # ... isolated beyond this many times the frame's median: under 1/4 of the surface's density
NEIGHBOUR_POOL = 32768  # rules 1 and 3 run on at most this many frame points (voxel representatives beyond)


@dataclass(frozen=True)
class Scoring:
    """Which rules a pipeline applies to its raw point scores (all of them by default)."""

    isolated: bool = True  # rule 1
    surface: bool = True  # rule 2, for detectors with a reference surface
    neighbours: int = 16  # rule 3: the mean over this many nearest frame points (1: off)

    @classmethod
    def off(cls) -> Scoring:
        """Raw point scores, as every model stored before these rules."""
        return cls(isolated=False, surface=False, neighbours=1)


def stored(config: dict) -> dict:
    """A pipeline configuration as a model stores it, with its ``scoring`` as a :class:`Scoring` (``Scoring.off()``
    for models stored before these rules: they keep the scores they were measured and calibrated with)."""
    return {**config, "scoring": Scoring(**config["scoring"]) if "scoring" in config else Scoring.off()}


def isolated(points: np.ndarray, neighbours: ops.Neighbours | None = None) -> np.ndarray:
    """(N, 3) frame -> (N,) bool: the points of rule 1. ``neighbours``: each point's nearest frame points, the
    point itself first where it is among them (``ops.knn(points, points, k)``), if already found; with fewer than
    ISOLATION_K + 1 of them (tiny frames) no point is isolated."""
    if neighbours is None:
        if len(points) <= ISOLATION_K:
            return np.zeros(len(points), dtype=bool)
        neighbours = ops.knn(points, points, ISOLATION_K + 1)
    if neighbours.dist.shape[1] <= ISOLATION_K:
        return np.zeros(len(points), dtype=bool)
    reach = neighbours.dist[:, ISOLATION_K]
    return reach > ISOLATION_FACTOR * np.median(reach)


def surface_distance(points: np.ndarray, reference: np.ndarray, normals: np.ndarray, tree, spacing: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rule 2. (N, 3) aligned points, the reference (R, 3) with unit normals (R, 3), a tree over it (``query(x,
    k=1) -> (dist, idx)``) and its median spacing -> signed distances (N,) float32 and the normal each sign
    refers to (N, 3)."""
    dist, idx = tree.query(points, k=1)
    n = normals[idx]
    s = np.einsum("ij,ij->i", points - reference[idx], n)
    beyond = np.maximum(np.sqrt(np.maximum(dist.astype(np.float64) ** 2 - s * s, 0.0)) - spacing, 0.0)
    return (np.where(s < 0, -1.0, 1.0) * np.sqrt(s * s + beyond * beyond)).astype(np.float32), n  # on the plane: +


RawScores = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def robust_scores(points: np.ndarray, raw: RawScores, rules: Scoring, geometry: ops.GeometryOps = ops.CPU
                  ) -> np.ndarray:
    """Rules 1 and 3 on a frame. (N, 3) points (any units: the rules are scale-free) and ``raw``, the detector's
    raw scores of any (M, 3) points: (M,) scores and, when they are signed, the (M, 3) normals each sign refers to
    (else None) -> (N,) float32 scores, >= 0.

    The rules run on at most NEIGHBOUR_POOL points (all of a frame up to that size; else one per voxel,
    :func:`pool`), so that a neighbourhood covers the same share of the part at any sensor resolution; on a larger
    frame every point then takes its voxel representative's score (no lookup per point, and the raw score is
    computed on the representatives only)."""
    k = min(len(points), max(rules.neighbours, ISOLATION_K + 1 if rules.isolated else 1))
    if k <= 1:  # no rule: every point's own raw score
        return np.abs(raw(points)[0]).astype(np.float32)
    reps, owner = pool(points)
    sub = points[reps]
    scores, directions = raw(sub)
    neighbours = geometry.knn(sub, sub, min(k, len(sub)))
    skip = isolated(sub, neighbours) if rules.isolated else np.zeros(len(sub), dtype=bool)
    if rules.neighbours > 1:
        out = consensus(scores, neighbours.idx[:, :rules.neighbours], ~skip, directions)
    else:
        out = np.abs(scores).astype(np.float32)
    if skip.any() and not skip.all():
        keep = np.flatnonzero(~skip)
        out[skip] = out[keep[geometry.knn(sub[skip], sub[keep], 1).idx[:, 0]]]
    return out if owner is None else out[owner]


def pool(points: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The points the rules run on: all of a frame of up to NEIGHBOUR_POOL points -> (indices (N,), None); else one
    representative per voxel (``ops.voxel_representatives``), the voxel grown until at most NEIGHBOUR_POOL are
    occupied -> (indices (U,), owner (N,): each point's representative is ``indices[owner]``). The first voxel edge
    is sqrt(2) / 4 of a 2048-point stride sample's median spacing: a quarter would put NEIGHBOUR_POOL voxels on a
    flat surface seen square-on, and a part's surfaces, at every angle to the grid, occupy about twice as many
    (measured: 2-3 passes with a quarter, 1-2 with this). A frame that occupies more grows it by the excess to the
    power 0.75 (near the points' spacing the count falls slower than 1 / edge^2: the square root took 3-4 passes,
    the excess itself overshot to under half the pool)."""
    n = len(points)
    if n <= NEIGHBOUR_POOL:
        return np.arange(n, dtype=np.int64), None
    sample = points[ops.stride_subsample(n, 2048)]
    size = float(np.median(ops.knn(sample, sample, 2).dist[:, 1])) * np.sqrt(2 * 2048 / NEIGHBOUR_POOL)
    size = max(size, float(np.ptp(points, axis=0).max()) / NEIGHBOUR_POOL)  # duplicates: a spacing of 0
    if size == 0:  # one point repeated: one representative
        return np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    while True:
        reps, owner = ops.voxel_representatives(points, size)
        if len(reps) <= NEIGHBOUR_POOL:
            return reps, owner
        size *= 1.05 * (len(reps) / NEIGHBOUR_POOL) ** 0.75


def consensus(scores: np.ndarray, idx: np.ndarray, counted: np.ndarray, directions: np.ndarray | None = None
              ) -> np.ndarray:
    """Rule 3: per point, the absolute mean of ``scores`` over its neighbours ``idx`` (N, k) that are ``counted``
    (N,) bool, each signed score turned to the point's own ``directions`` (N, 3) first. -> (N,) float32."""
    total = np.zeros(len(idx))
    count = np.zeros(len(idx))
    for j in range(idx.shape[1]):  # column by column: no (N, k, 3) temporaries on large frames
        nb = idx[:, j]
        value = scores[nb].astype(np.float64)
        if directions is not None:
            value = np.where(np.einsum("ij,ij->i", directions[nb], directions) < 0, -value, value)
        total += np.where(counted[nb], value, 0.0)
        count += counted[nb]
    return np.abs(total / np.maximum(count, 1)).astype(np.float32)
