"""Region finding on hostile frames: the voxel-grid components of ``edgead.stream.regions`` against the KD-tree
radius graph they replaced (its quadratic pair list is the reference), measured in the same run.

    python benchmarks/regions.py

Prints wall time and peak traced memory (tracemalloc sees numpy's buffers) per case. The reference runs only on
the cases it can finish in seconds.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from edgead.stream.regions import anomalous_regions, point_spacing


def radius_graph_regions(points: np.ndarray, scores: np.ndarray, threshold: float) -> int:
    """The previous implementation: every pair of hot points closer than the radius, then components."""
    hot = np.flatnonzero(scores > threshold)
    pts = points[hot].astype(np.float64)
    pairs = cKDTree(pts).query_pairs(max(3.0 * point_spacing(points), 1e-9), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(pts), len(pts)))
    return connected_components(graph, directed=False)[0]


def measure(fn, *args) -> tuple[float, float, object]:
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return dt, peak, out


def cases():
    rng = np.random.default_rng(0)
    part = rng.uniform(0, 100, (16_000, 3)).astype(np.float32)
    for copies in (4000, 8000):
        pts = np.r_[part, np.tile(part[:1], (copies, 1))]
        scores = np.r_[np.zeros(len(part)), np.ones(copies)].astype(np.float32)
        yield f"16k part + {copies} copies of one point (hot)", pts, scores, True
    cloud = rng.uniform(0, 100, (1_000_000, 3)).astype(np.float32)
    yield "1M-point random cloud, all hot", cloud, np.ones(len(cloud), np.float32), False
    yield "1M-point random cloud, 10% hot", cloud, (rng.random(len(cloud)) < 0.1).astype(np.float32), False


def main() -> None:
    print(f"{'case':48s} {'voxel s':>8s} {'MB':>7s} {'regions':>8s} {'radius graph s':>15s} {'MB':>7s}")
    for name, pts, scores, with_reference in cases():
        dt, peak, regions = measure(anomalous_regions, pts, scores, 0.5)
        ref = "-", "-"
        if with_reference:
            rdt, rpeak, _ = measure(radius_graph_regions, pts, scores, 0.5)
            ref = f"{rdt:.2f}", f"{rpeak:.0f}"
        print(f"{name:48s} {dt:8.3f} {peak:7.0f} {len(regions):8d} {ref[0]:>15s} {ref[1]:>7s}")


if __name__ == "__main__":
    main()
