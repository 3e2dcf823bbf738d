"""Anomalous regions: where on the part the defect is, as a PLC or robot can use it.

A region is a connected cluster of points scoring above the threshold, connected when closer than ``radius``
(a KD-tree radius graph, then connected components). Reported in sensor units (mm) with plain types.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from edgead.ops import knn, stride_subsample


def point_spacing(points: np.ndarray, sample: int = 1024) -> float:
    """Median distance to the nearest neighbour, from an even subsample of query points. (N, 3) -> float."""
    if len(points) < 2:
        return 0.0
    query = points[stride_subsample(len(points), sample)]
    return float(np.median(knn(query, points, 2)[0][:, 1]))


def anomalous_regions(points: np.ndarray, scores: np.ndarray, threshold: float | None, *, radius: float | None = None,
                      min_points: int = 1, max_regions: int = 32) -> list[dict]:
    """(N, 3) points, (N,) scores (NaN = not scored) -> regions, largest first.

    ``radius`` defaults to 3 x the cloud's median point spacing, so a cluster is one blob on the surface whatever
    the sensor's resolution. Each region: centroid, bbox_min, bbox_max, extent (3 floats each), n_points, max_score.
    """
    if threshold is None:
        return []
    hot = np.flatnonzero(np.nan_to_num(scores, nan=-np.inf) > threshold)
    if len(hot) == 0:
        return []
    pts = points[hot].astype(np.float64)
    r = 3.0 * point_spacing(points) if radius is None else radius
    pairs = cKDTree(pts).query_pairs(max(r, 1e-9), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(pts), len(pts)))
    n, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels, minlength=n)
    regions = []
    for c in np.argsort(-counts, kind="stable")[:max_regions]:
        if counts[c] < min_points:
            break
        member = labels == c
        p, lo, hi = pts[member], pts[member].min(0), pts[member].max(0)
        regions.append({"centroid": p.mean(0).tolist(), "bbox_min": lo.tolist(), "bbox_max": hi.tolist(),
                        "extent": (hi - lo).tolist(), "n_points": int(counts[c]),
                        "max_score": float(scores[hot[member]].max())})
    return regions
