"""Anomalous regions: where on the part the defect is, as a PLC or robot can use it.

A region is a connected cluster of points scoring above the threshold. Connectivity is taken on a voxel grid of
edge ``radius``: two hot points are linked when their voxels touch (26-neighbourhood), so every pair closer than
``radius`` is linked (and some pairs up to ``2 sqrt(3) radius`` apart). That is linear in the number of points
with memory bounded by it, whatever the frame holds (duplicated points, a million hot points), where a radius
graph is quadratic in the worst case. Reported in sensor units (mm) with plain types.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from edgead.ops import stride_subsample
from edgead.runtime.detector import OBJECT_K

SPACING_SAMPLE = 16384  # points the spacing estimate looks at
MAX_HOT = 200_000  # hot points clustered; more are stride-thinned (the frame is anomalous everywhere anyway)
# the 13 neighbour offsets "after" a voxel in row-major order: with their mirror images, all 26 neighbours
_FORWARD = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                     if (i, j, k) > (0, 0, 0)], dtype=np.int64)


def point_spacing(points: np.ndarray, sample: int = SPACING_SAMPLE) -> float:
    """Median nearest-neighbour distance of a surface scan. (N, 3) -> float.

    Measured on a stride subsample of at most ``sample`` points and scaled by ``sqrt(sample / N)``: on a surface
    the spacing grows with the square root of the thinning, so the estimate costs the same for any frame size.
    Duplicated points do not count (a stuck sensor's copies would otherwise give 0)."""
    n = len(points)
    if n < 2:
        return 0.0
    sub = np.asarray(points[stride_subsample(n, sample)], dtype=np.float64)
    dist, _ = cKDTree(sub).query(sub, k=2)
    d = dist[:, 1][dist[:, 1] > 0]
    return float(np.median(d) * np.sqrt(len(sub) / n)) if len(d) else 0.0


def voxel_components(points: np.ndarray, size: float) -> np.ndarray:
    """Connected components of the occupied voxels of edge ``size`` (26-neighbourhood). (H, 3) -> (H,) int64 label
    per point, labels 0..C-1. Linear in H apart from one sort of the voxel codes."""
    keys = np.floor(points / size).astype(np.int64)
    keys -= keys.min(0) - 1  # >= 1 on every axis, so every neighbour offset stays >= 0
    dims = keys.max(0) + 2
    code = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    voxels, owner = np.unique(code, return_inverse=True)
    rows, cols = [], []
    for off in _FORWARD:
        pos = np.searchsorted(voxels, voxels + (off[0] * dims[1] + off[1]) * dims[2] + off[2])
        pos = np.minimum(pos, len(voxels) - 1)
        hit = voxels[pos] == voxels + (off[0] * dims[1] + off[1]) * dims[2] + off[2]
        rows.append(np.flatnonzero(hit))
        cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(voxels), len(voxels)))
    _, labels = connected_components(graph, directed=False)
    return labels[owner.ravel()].astype(np.int64)


def anomalous_regions(points: np.ndarray, scores: np.ndarray, threshold: float | None, *, radius: float | None = None,
                      max_regions: int = 32, min_points: int = OBJECT_K) -> list[dict]:
    """(N, 3) points, (N,) scores (NaN = not scored) -> regions, largest first.

    ``radius`` defaults to 3 x the cloud's median point spacing, so a cluster is one blob on the surface whatever
    the sensor's resolution. A region needs ``min_points`` points above the threshold (default: the neighbourhood
    the object score averages over), so noise specks and flying pixels do not list as defects; the largest cluster
    is always kept, so an anomalous part always says where. Each region: centroid, bbox_min, bbox_max, extent
    (3 floats each), n_points, max_score.
    """
    if threshold is None:
        return []
    hot = np.flatnonzero(np.nan_to_num(scores, nan=-np.inf) > threshold)
    if len(hot) == 0:
        return []
    hot = hot[stride_subsample(len(hot), MAX_HOT)]
    pts = points[hot].astype(np.float64)
    r = 3.0 * point_spacing(points) if radius is None else radius
    extent = float(np.ptp(pts, axis=0).max())
    labels = voxel_components(pts, max(r, extent / 2**20) or 1.0)  # at most 2^20 voxels per axis: int64 codes
    counts = np.bincount(labels)
    regions = []
    for rank, c in enumerate(np.argsort(-counts, kind="stable")[:max_regions]):
        if rank and counts[c] < min_points:
            break
        member = labels == c
        p = pts[member]
        lo, hi = p.min(0), p.max(0)
        regions.append({"centroid": p.mean(0).tolist(), "bbox_min": lo.tolist(), "bbox_max": hi.tolist(),
                        "extent": (hi - lo).tolist(), "n_points": int(counts[c]),
                        "max_score": float(scores[hot[member]].max())})
    return regions
