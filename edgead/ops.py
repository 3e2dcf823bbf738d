"""Geometry ops shared by every detector, backend and the CUDA kernels' tests.

Small pure functions on numpy arrays. Shapes are given in each docstring; points are float32 unless stated.
Every function is deterministic: the same input gives the same output, bit for bit, on every call. The CUDA
kernels in ``edgead/kernels`` implement the same definitions (same FPS start, same tie-breaking) and are tested
against these.

The four ops a GPU can take over (FPS, KNN, grouping, nearest distance) form the :class:`GeometryOps` protocol:
pipelines receive an implementation (:data:`CPU` here, ``edgead.runtime.cuda_ops.CudaOps`` on the GPU) when they
are built and call everything else from this module directly.

Imports nothing of edgead.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from typing import NamedTuple, Protocol

import numpy as np
from pykdtree.kdtree import KDTree

try:  # exact FPS in compiled code; the numpy loop below defines the same result.
    import fpsample
except ImportError:  # pragma: no cover - fpsample is a base dependency
    fpsample = None


@dataclass(frozen=True)
class Normalization:
    """Maps sensor units (mm) to the unit-scale frame the networks were trained in.

    ``center`` is taken per frame (parts arrive at arbitrary offsets); ``scale`` is fixed at training time so
    that a defect keeps its physical size relative to the part.
    """

    scale: float

    def apply(self, points: np.ndarray, center: np.ndarray) -> np.ndarray:
        """(N, 3), (3,) -> (N, 3) float32 in the normalised frame."""
        return ((points - center) / self.scale).astype(np.float32)

    def invert(self, points: np.ndarray, center: np.ndarray) -> np.ndarray:
        """(N, 3), (3,) -> (N, 3) float32 in sensor units."""
        return (points * self.scale + center).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fit(cls, clouds: list[np.ndarray]) -> Normalization:
        """Scale = mean over the training clouds of the largest distance from the bounding-box centre."""
        radii = [float(np.linalg.norm(c - bbox_center(c), axis=1).max()) for c in clouds]
        return cls(scale=float(np.mean(radii)))


def bbox_center(points: np.ndarray) -> np.ndarray:
    """(N, 3) -> (3,) float32 centre of the axis-aligned bounding box (robust to uneven sampling density)."""
    # per column: numpy's axis-0 reduction over (N, 3) rows is ~20x slower on a 400k-point frame
    lo = np.array([points[:, i].min() for i in range(3)])
    hi = np.array([points[:, i].max() for i in range(3)])
    return ((lo + hi) / 2).astype(np.float32)


def stride_subsample(n: int, m: int) -> np.ndarray:
    """Indices of ``min(n, m)`` points evenly spread over ``range(n)``: (m,) int64.

    A cheap deterministic thinning applied before FPS on very large frames; on a sensor's organised cloud it is a
    uniform grid subsample.
    """
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return (np.arange(m, dtype=np.int64) * n) // m


def farthest_point_sample(points: np.ndarray, m: int, start: int = 0) -> np.ndarray:
    """Exact farthest point sampling. (N, 3) -> (m,) int64 indices, the first being ``start``.

    Distances are squared euclidean in float32; a tie picks the highest index (as fpsample does, and the CUDA
    kernel). Requires m <= N.
    """
    n = len(points)
    if not 1 <= m <= n:
        raise ValueError(f"farthest_point_sample: cannot pick {m} of {n} points")
    pts = np.ascontiguousarray(points, dtype=np.float32)
    if fpsample is not None:
        return fpsample.fps_sampling(pts, m, start_idx=int(start)).astype(np.int64)
    return farthest_point_sample_reference(pts, m, start)


def farthest_point_sample_reference(points: np.ndarray, m: int, start: int = 0) -> np.ndarray:
    """The definition of :func:`farthest_point_sample` as a plain numpy loop. (N, 3) -> (m,) int64."""
    pts = np.ascontiguousarray(points, dtype=np.float32)
    idx = np.empty(m, dtype=np.int64)
    idx[0] = start
    dist = np.full(len(pts), np.inf, dtype=np.float32)
    for j in range(1, m):
        diff = pts - pts[idx[j - 1]]
        dist = np.minimum(dist, (diff * diff).sum(1))
        idx[j] = len(pts) - 1 - int(np.argmax(dist[::-1]))  # ties -> highest index
    return idx


class Neighbours(NamedTuple):
    dist: np.ndarray  # (M, k) float32 euclidean distances, ascending
    idx: np.ndarray  # (M, k) int64 indices into the reference points


class Groups(NamedTuple):
    patches: np.ndarray  # (G, k, 3) float32 neighbours minus their centre
    idx: np.ndarray  # (G, k) int64 neighbour indices


def _query(tree: KDTree, query: np.ndarray, k: int) -> Neighbours:
    dist, idx = tree.query(query, k=k)
    return Neighbours(dist.reshape(len(query), k).astype(np.float32), idx.reshape(len(query), k).astype(np.int64))


def knn(query: np.ndarray, ref: np.ndarray, k: int) -> Neighbours:
    """k nearest neighbours of each query point in ``ref``, ordered by (distance, index).

    (M, 3), (N, 3) -> distances (M, k) float32 (euclidean, ascending), indices (M, k) int64. Requires k <= N.
    Equidistant neighbours come in index order and a tie at the k-th place keeps the lowest indices, exactly as
    the CUDA kernels order them (a k-d tree's own order among ties is arbitrary: on grids and duplicated points it
    differs in most rows). The tree is asked for one neighbour more than k to see ties at the boundary, and rows
    that have one are asked again until the tie is behind them.
    """
    n = len(ref)
    if not 1 <= k <= n:
        raise ValueError(f"knn: cannot find {k} neighbours among {n} points")
    tree = KDTree(np.ascontiguousarray(ref, dtype=np.float32))
    q = np.ascontiguousarray(query, dtype=np.float32)
    kk = min(k + 1, n)
    dist, idx = _query(tree, q, kk)
    rows = np.flatnonzero(dist[:, k - 1] == dist[:, k]) if kk > k else np.zeros(0, np.int64)  # tie at the k-th
    if len(rows):
        more = Neighbours(dist[rows], idx[rows])
        # enough once the last neighbour is farther than the tie: every point at the tie's distance is then in
        while kk < n and not (more.dist[:, -1] > more.dist[:, k - 1]).all():
            kk = min(2 * kk, n)
            more = _query(tree, q[rows], kk)
        d, i = _canonical(q[rows], ref, *more)
        dist[rows], idx[rows] = d[:, :k + 1], i[:, :k + 1]
    tied = np.flatnonzero((dist[:, 1:k] == dist[:, :k - 1]).any(1)) if k > 1 else np.zeros(0, np.int64)
    if len(tied):
        dist[tied], idx[tied] = _canonical(q[tied], ref, dist[tied], idx[tied])
    return Neighbours(np.ascontiguousarray(dist[:, :k]), np.ascontiguousarray(idx[:, :k]))


def _squared(query: np.ndarray, points: np.ndarray) -> np.ndarray:
    """float32 squared distances summed as (dx^2 + dy^2) + dz^2, the order of the CUDA kernels.
    (..., 3), (..., 3) -> (...)."""
    diff = np.asarray(points, np.float32) - np.asarray(query, np.float32)
    return diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]


def _canonical(query: np.ndarray, ref: np.ndarray, dist: np.ndarray, idx: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rows reordered by (squared distance, index): two squared distances one ulp apart can share a rounded
    euclidean distance, so the order is taken on the squares. (R, 3), (N, 3), (R, k), (R, k) -> (R, k) x2."""
    order = np.lexsort((idx, _squared(query[:, None, :], np.asarray(ref)[idx])), axis=1)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def knn_reference(query: np.ndarray, ref: np.ndarray, k: int) -> Neighbours:
    """The definition of :func:`knn` by brute force (float32 squared distances in numpy's order, then a stable sort
    by (distance, index)). (M, 3), (N, 3) -> Neighbours. For tests: O(M N) memory."""
    d2 = _squared(np.asarray(query, np.float32)[:, None, :], np.asarray(ref, np.float32)[None, :, :])
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return Neighbours(np.sqrt(np.take_along_axis(d2, order, 1)), order.astype(np.int64))


def group(points: np.ndarray, centers: np.ndarray, k: int) -> Groups:
    """KNN patches around each centre, relative to it.

    (N, 3), (G, 3) -> patches (G, k, 3) float32 (neighbour minus centre), neighbour indices (G, k) int64.
    """
    idx = knn(centers, points, k).idx
    patches = points[idx] - centers[:, None, :]
    return Groups(patches.astype(np.float32), idx)


def nearest_distance(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance from each query point to its nearest point in ``ref``. (M, 3), (N, 3) -> (M,) float32."""
    if len(ref) == 0:
        raise ValueError("nearest_distance: no reference points")
    tree = KDTree(np.ascontiguousarray(ref, dtype=np.float32))
    return _query(tree, np.ascontiguousarray(query, dtype=np.float32), 1).dist[:, 0]


class GeometryOps(Protocol):
    """The ops a pipeline takes as a parameter, so a backend can run them elsewhere (``CudaOps`` on the GPU) with
    the same results."""

    def farthest_point_sample(self, points: np.ndarray, m: int, start: int = 0) -> np.ndarray: ...

    def knn(self, query: np.ndarray, ref: np.ndarray, k: int) -> Neighbours: ...

    def group(self, points: np.ndarray, centers: np.ndarray, k: int) -> Groups: ...

    def nearest_distance(self, query: np.ndarray, ref: np.ndarray) -> np.ndarray: ...


class CpuOps:
    """:class:`GeometryOps` with this module's numpy / k-d tree implementations."""

    farthest_point_sample = staticmethod(farthest_point_sample)
    knn = staticmethod(knn)
    group = staticmethod(group)
    nearest_distance = staticmethod(nearest_distance)


CPU = CpuOps()


def voxel_representatives(points: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """One representative point per occupied cubic voxel ``floor(x / size)`` (a grid fixed at the origin, so a part
    aligned to the same model frame gets the same voxels wherever the sensor saw it).

    (N, 3) -> reps (U,) int64 indices into ``points`` (ascending), owner (N,) int64: each point's representative
    is ``reps[owner]``, a point of the same voxel. Scoring the U representatives and spreading their scores with
    ``owner`` costs O(N) instead of a nearest-neighbour query per point. No sort: voxels go into a hash table,
    and a point whose slot holds another voxel (a hash collision) represents itself, so a point and its
    representative always share a voxel. Deterministic for a given numpy (table writes run in index order).
    ``size <= 0``, or coordinates of 2^62 voxels or more, gives every point to itself.
    """
    n = len(points)
    identity = np.arange(n, dtype=np.int64)
    if size <= 0 or n < 2:
        return identity, identity
    inv = np.float32(1.0 / size)  # voxel = floor(x * (1 / size)), in the points' own precision
    # the first and last voxel per axis: floor(x * inv) is monotonic in x, so they come from the column's min/max
    lo = [float(np.floor(points[:, i].min() * inv)) for i in range(3)]
    hi = [float(np.floor(points[:, i].max() * inv)) for i in range(3)]
    if max(map(abs, lo + hi)) >= 2.0**62 or float(np.prod([hi[i] - lo[i] + 1 for i in range(3)])) >= 2.0**62:
        return identity, identity  # a stray point metres away at a sub-millimetre voxel size
    code = np.zeros(n, dtype=np.int64)  # the voxel's exact row-major index in the frame's box of voxels
    for i in range(3):
        code *= int(hi[i] - lo[i]) + 1
        code += np.floor(points[:, i] * inv).astype(np.int64) - int(lo[i])
    bits = max(10, min(24, (n - 1).bit_length() + 2))  # load factor <= 1/4 up to 4M points; table <= 64 MB
    slot = ((code.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits)).astype(np.intp)
    table = np.empty(1 << bits, dtype=np.int32)  # only written slots are read
    table[slot] = identity
    rep = table[slot]
    rep = np.where(code[rep] == code, rep, identity)
    reps = np.flatnonzero(rep == identity)
    position = np.empty(n, dtype=np.int64)
    position[reps] = np.arange(len(reps))
    return reps, position[rep]


def score_by_voxel(points: np.ndarray, size: float, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``score`` evaluated on one representative point per voxel of edge ``size`` and spread over the voxel:
    (N, 3) -> (N,). Every point gets the exact score of a point at most ``size * sqrt(3)`` away."""
    if size <= 0:
        return score(points)  # no copy and gather of the whole frame when every point is scored anyway
    reps, owner = voxel_representatives(points, size)
    return score(points[reps])[owner]


GRID_BLOCK = 4  # cells per block edge in a NearestGrid: blocks of 4^3 cells, allocated only near the reference


class NearestGrid(NamedTuple):
    """A sparse grid around a fixed reference cloud whose every certified cell lists reference points that contain
    the nearest reference point of *any* point inside it: one lookup and a few distances replace a tree query.

    Cells are cubes of edge ``cell`` from ``origin``; blocks of GRID_BLOCK^3 cells are allocated only within
    ``band`` of the reference. Most cells need at most K candidates (``candidates``); the few that need up to 2K
    list them in ``overflow``, looked up for their points only. Built once (:func:`nearest_grid`);
    :func:`grid_nearest` answers, and marks the points it cannot certify (outside the band, or in a cell that
    needed more than 2K candidates) for an exact tree query.
    """

    origin: np.ndarray  # (3,) float32: the corner of cell (0, 0, 0)
    cell: float  # cell edge, the reference's units
    blocks: np.ndarray  # (BX, BY, BZ) int32: 0 = no block there, b > 0 = row b of ``cells``
    cells: np.ndarray  # (B + 1, GRID_BLOCK^3) int32: r > 0 row of ``candidates``, r < 0 row -r of ``overflow``
    candidates: np.ndarray  # (C + 1, K) int32: reference indices per candidate row (row 0 unused)
    overflow: np.ndarray  # (O + 1, 2K) int32: the same for crowded cells (row 0 unused)

    @property
    def nbytes(self) -> int:
        return int(self.blocks.nbytes + self.cells.nbytes + self.candidates.nbytes + self.overflow.nbytes)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The grid as named arrays (for a pipeline's state)."""
        frame = np.r_[self.origin, self.cell].astype(np.float64)
        return {f"{prefix}_frame": frame, f"{prefix}_blocks": self.blocks, f"{prefix}_cells": self.cells,
                f"{prefix}_candidates": self.candidates, f"{prefix}_overflow": self.overflow}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> NearestGrid | None:
        """The grid stored by :meth:`arrays`, or None when ``arrays`` has none."""
        if f"{prefix}_frame" not in arrays:
            return None
        frame = np.asarray(arrays[f"{prefix}_frame"], np.float64)
        return cls(frame[:3].astype(np.float32), float(frame[3]), np.asarray(arrays[f"{prefix}_blocks"], np.int32),
                   np.asarray(arrays[f"{prefix}_cells"], np.int32),
                   np.asarray(arrays[f"{prefix}_candidates"], np.int32),
                   np.asarray(arrays[f"{prefix}_overflow"], np.int32))


def nearest_grid(reference: np.ndarray, cell: float, band: float, k: int = 4, search: int = 16,
                 tree: KDTree | None = None, chunk: int = 1 << 16) -> NearestGrid:
    """Build a :class:`NearestGrid` over ``reference`` (R, 3): cells of edge ``cell`` within ``band`` of it, each
    certified with at most ``k`` candidates (crowded cells: ``2 k``, in ``overflow``) found among the ``search``
    nearest reference points of its centre.

    A cell's candidates start with a point r1 near its centre c; a point p of the cell is within |c - r1| + rho of
    it (rho: the cell's half-diagonal), so p's nearest point lies within |c - r1| + 2 rho of c (the ball). Every
    ball point r is then added unless a candidate q is at least as close as r to *every* point of the cell (the
    cube lies on q's side of their bisector plane: max over the cube of 2 e.(r - q) <= |r - c|^2 - |q - c|^2,
    e = p - c), so the nearest point of any p in the cell is a candidate or ties with one. Cells whose ball reaches
    past the ``search`` nearest, or that need more than ``2 k`` candidates, stay uncertified. The cube is padded by
    float32 rounding at the reference's coordinates, so whatever point the lookup puts in a cell is covered."""
    ref = np.ascontiguousarray(reference, dtype=np.float32)
    if len(ref) < search or not cell > 0 or not band >= 0:
        raise ValueError(f"nearest_grid: need >= {search} reference points, cell > 0 and band >= 0")
    tree = tree or KDTree(ref)
    ref64 = ref.astype(np.float64)
    origin = (ref64.min(0) - band - cell).astype(np.float32)
    edge = cell * GRID_BLOCK
    shape = np.ceil((ref64.max(0) + band + cell - origin) / edge).astype(np.int64) + 1
    near = _blocks_near(np.floor((ref64 - origin) / edge).astype(np.int64), int(np.ceil(band / edge)), shape)
    local = np.stack(np.meshgrid(*[np.arange(GRID_BLOCK)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pad = cell * 1e-3 + 8 * float(np.spacing(np.float32(np.abs(ref64).max() + band + cell)))
    half = cell / 2 + pad

    def centres(flat: np.ndarray) -> np.ndarray:  # flat cell ids (block * GRID_BLOCK^3 + local) -> (n, 3) float64
        ijk = near[flat // GRID_BLOCK**3] * GRID_BLOCK + local[flat % GRID_BLOCK**3]
        return (ijk + 0.5) * cell + origin.astype(np.float64)

    n_cells = len(near) * GRID_BLOCK**3
    inband = np.concatenate([s + np.flatnonzero(tree.query(centres(np.arange(s, min(s + 8 * chunk, n_cells)))
                                                           .astype(np.float32), k=1)[0] <= band + 2 * half * 3**0.5)
                             for s in range(0, n_cells, 8 * chunk)])
    rows = np.zeros((len(inband), 2 * k), np.int32)
    count = np.zeros(len(inband), np.int64)  # 0: uncertified
    for s in range(0, len(inband), chunk):
        rows[s:s + chunk], count[s:s + chunk] = _certify(ref64, centres(inband[s:s + chunk]), tree, half, 2 * k,
                                                         search)
    row_id = np.zeros(len(inband), np.int64)
    small, crowded = (count > 0) & (count <= k), count > k
    candidates, row_id[small] = _unique_rows(rows[small, :k])
    overflow, row_id[crowded] = _unique_rows(rows[crowded])
    row_id[crowded] *= -1
    inband, row_id = inband[count > 0], row_id[count > 0]
    used = np.unique(inband // GRID_BLOCK**3)  # blocks with a certified cell
    cell_rows = np.zeros((len(used) + 1, GRID_BLOCK**3), np.int32)
    cell_rows[1 + np.searchsorted(used, inband // GRID_BLOCK**3), inband % GRID_BLOCK**3] = row_id
    blocks = np.zeros(tuple(shape), np.int32)
    blocks[tuple(near[used].T)] = np.arange(1, len(used) + 1, dtype=np.int32)
    return NearestGrid(origin, float(cell), blocks, cell_rows, candidates, overflow)


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, w) int32 -> (the distinct rows after an unused row 0: (u + 1, w) int32, each row's index there (n,))."""
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    return np.concatenate([np.zeros((1, rows.shape[1]), np.int32), unique]), inverse.ravel() + 1


def _blocks_near(occupied: np.ndarray, reach: int, shape: np.ndarray) -> np.ndarray:
    """Sorted unique blocks within ``reach`` blocks (per axis) of the ``occupied`` ones, inside ``shape``.
    (P, 3) int64 -> (B, 3) int64."""
    steps = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    near = np.unique((np.unique(occupied, axis=0)[:, None, :] + offsets[None]).reshape(-1, 3), axis=0)
    return near[((near >= 0) & (near < shape)).all(1)]


def _certify(ref: np.ndarray, centres: np.ndarray, tree: KDTree, half: float, k: int, search: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of cubes (``centres`` (m, 3) float64, half-edge ``half``) as :func:`nearest_grid` defines them.
    -> (m, k) int32 reference indices (unused slots repeat the first), (m,) int64 how many (0: uncertified)."""
    m = len(centres)
    _, idx = tree.query(centres.astype(np.float32), k=search)
    idx = idx.reshape(m, search)
    rel = ref[idx] - centres[:, None, :]  # neighbours relative to the centre, float64
    sq = np.einsum("msc,msc->ms", rel, rel)
    radius2 = (np.sqrt(sq[:, 0]) + 2 * half * 3**0.5) ** 2
    pos = np.zeros((m, k), np.int64)  # candidates as positions in each row of idx; unused slots: 0, the first
    count = np.ones(m, np.int64)
    ok = sq.max(1) > radius2 * (1 + 1e-6)  # every reference point of the ball is among those searched
    for j in range(1, search):
        active = np.flatnonzero(ok & (sq[:, j] <= radius2))
        dominated = np.zeros(len(active), bool)
        for c in range(k):
            q = pos[active, c]
            u = np.abs(rel[active, j] - rel[active, q]).sum(1)
            dominated |= (count[active] > c) & (2 * half * u <= sq[active, j] - sq[active, q])
        add = active[~dominated]
        ok[add[count[add] >= k]] = False
        add = add[count[add] < k]
        pos[add, count[add]] = j
        count[add] += 1
    return np.take_along_axis(idx, pos, 1).astype(np.int32), np.where(ok, count, 0)


def grid_nearest(grid: NearestGrid, reference: np.ndarray | list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """Index of each point's nearest reference point among its cell's candidates, -1 where the grid cannot certify
    it (outside the band, or an uncertified cell). (N, 3) float32 finite, reference (R, 3) or its 3 columns ->
    (N,) int64. Equidistant candidates: the first listed."""
    return _grid_search(grid, reference, points, _closest)


def grid_distance(grid: NearestGrid, reference: np.ndarray | list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """Each point's nearest-point distance as :func:`point_distance` gives it for :func:`grid_nearest`'s index, NaN
    where the grid cannot certify it; cheaper (no index kept). (N, 3), reference -> (N,) float32."""
    return np.sqrt(_grid_search(grid, reference, points, _least_square))


def _grid_search(grid: NearestGrid, reference, points: np.ndarray, search: Callable) -> np.ndarray:
    """``search(candidates (n, K), points (n, 3), reference columns)`` over each point's row (crowded cells: their
    overflow rows); uncertified points get -1 (indices) or NaN (distances)."""
    rows = grid_rows(grid, points)
    r = [np.ascontiguousarray(c, dtype=np.float32) for c in (reference.T if isinstance(reference, np.ndarray)
                                                              else reference)]
    out = search(np.take(grid.candidates, np.maximum(rows, 0), axis=0), points, r)
    crowded = np.flatnonzero(rows < 0)
    if len(crowded):
        out[crowded] = search(np.take(grid.overflow, -rows[crowded], axis=0), points[crowded], r)
    out[rows == 0] = -1 if out.dtype.kind == "i" else np.nan
    return out


def _candidate_squares(cand: np.ndarray, points: np.ndarray, ref_cols: list[np.ndarray]):
    """Squared distance to each candidate in turn: yields (ids (N,), d2 (N,) float32) per column of ``cand``
    (N, K). Column by column: numpy's axis-1 work on (N, 3) is slow."""
    p = [np.ascontiguousarray(points[:, i], dtype=np.float32) for i in range(3)]
    for j in range(cand.shape[1]):
        ids = cand[:, j]
        d = [p[i] - np.take(ref_cols[i], ids) for i in range(3)]
        yield ids, d[0] * d[0] + d[1] * d[1] + d[2] * d[2]


def _closest(cand: np.ndarray, points: np.ndarray, ref_cols: list[np.ndarray]) -> np.ndarray:
    """The candidate nearest each point, the first of equals. (N, K) int32, (N, 3), 3 x (R,) -> (N,) int64."""
    best = np.full(len(points), np.inf, np.float32)
    out = np.zeros(len(points), np.int64)
    for ids, d2 in _candidate_squares(cand, points, ref_cols):
        closer = d2 < best
        np.copyto(best, d2, where=closer)
        np.copyto(out, ids, where=closer)
    return out


def _least_square(cand: np.ndarray, points: np.ndarray, ref_cols: list[np.ndarray]) -> np.ndarray:
    """The least squared distance to a candidate. (N, K) int32, (N, 3), 3 x (R,) -> (N,) float32."""
    best = np.full(len(points), np.inf, np.float32)
    for _, d2 in _candidate_squares(cand, points, ref_cols):
        np.minimum(best, d2, out=best)
    return best


def grid_rows(grid: NearestGrid, points: np.ndarray) -> np.ndarray:
    """Each point's candidate row in ``grid`` (0: none). (N, 3) finite -> (N,) int32; points outside the grid's box
    get row 0."""
    shape = grid.blocks.shape
    inv = np.float32(1.0 / grid.cell)
    shift = GRID_BLOCK.bit_length() - 1
    block = np.zeros(len(points), np.int32)
    local = np.zeros(len(points), np.int32)
    inside = np.ones(len(points), bool)
    for axis in range(3):
        g = (points[:, axis] - grid.origin[axis]) * inv
        np.clip(g, -1, shape[axis] * GRID_BLOCK, out=g)  # far points stay within int32 below
        i = np.floor(g).astype(np.int32)
        inside &= i.view(np.uint32) < shape[axis] * GRID_BLOCK  # negative -> huge unsigned
        block *= shape[axis]
        block += i >> shift
        local *= GRID_BLOCK
        local += i & (GRID_BLOCK - 1)
    slot = np.take(grid.blocks, np.where(inside, block, 0))
    slot[~inside] = 0
    return np.take(grid.cells, slot * GRID_BLOCK**3 + local)


class NearestIndex:
    """Nearest-point queries against a fixed reference: a :class:`NearestGrid` where it certifies the answer, a
    k-d tree for the other points, so every answer is the exact nearest point (ties aside). ``query(points, k=1)
    -> (dist, idx)`` as the trees :func:`rigid_icp` takes; distances as :func:`point_distance`. Large queries run
    in two halves on two threads (numpy releases the GIL in its loops)."""

    PARALLEL = 100_000  # points from which a query is split over two threads

    def __init__(self, reference: np.ndarray, tree, grid: NearestGrid | None = None):
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)
        self.columns = [np.ascontiguousarray(self.reference[:, i]) for i in range(3)]
        self.tree, self.grid = tree, grid  # tree: scipy's single-threaded cKDTree, or alike

    def query(self, points: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if k != 1:
            raise ValueError("NearestIndex answers nearest-point queries only (k=1)")
        points = np.ascontiguousarray(points, dtype=np.float32)
        idx = self._split(self.nearest, points)
        return point_distance(points, self.reference, idx), idx

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N,) float32: ``query(points)[0]``, without keeping indices where the grid answers."""
        return self._split(self._distance, np.ascontiguousarray(points, dtype=np.float32))

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) float32 -> (N,) int64 index of each point's nearest reference point."""
        if self.grid is None:
            return np.asarray(self.tree.query(points, k=1)[1], np.int64)
        idx = grid_nearest(self.grid, self.columns, points)
        miss = np.flatnonzero(idx < 0)
        if len(miss):
            idx[miss] = self.tree.query(points[miss], k=1)[1]
        return idx

    def _distance(self, points: np.ndarray) -> np.ndarray:
        if self.grid is None:
            return point_distance(points, self.reference, self.nearest(points))
        dist = grid_distance(self.grid, self.columns, points)
        miss = np.flatnonzero(np.isnan(dist))
        if len(miss):
            dist[miss] = point_distance(points[miss], self.reference, self.tree.query(points[miss], k=1)[1])
        return dist

    def _split(self, fn: Callable[[np.ndarray], np.ndarray], points: np.ndarray) -> np.ndarray:
        """``fn(points)``, as two halves on two threads for a large query."""
        if len(points) < self.PARALLEL:
            return fn(points)
        half = len(points) // 2
        return np.concatenate(list(_pool().map(fn, (points[:half], points[half:]))))


def reference_grid(reference: np.ndarray, tree: KDTree | None = None, cell: float = 0.8, band: float = 3.0,
                   k: int = 4, max_bytes: int = 64 << 20) -> NearestGrid | None:
    """The :class:`NearestGrid` of a fixed reference (R, 3) at its own scale: cells of ``cell`` and a band of
    ``band`` median point spacings (good scans put 99.9 % of their points within 3, measured), ``k`` candidates;
    the cells grow by 1.25x until the grid takes at most ``max_bytes`` (its dense table of blocks a quarter of it).
    None for a reference too small or degenerate for one (fewer than 16 points, or duplicates at the median): its
    queries go to the tree."""
    if len(reference) < 16:
        return None
    tree = tree or KDTree(np.ascontiguousarray(reference, dtype=np.float32))
    spacing = median_spacing(reference, tree)
    if not spacing > 0:
        return None
    edge = cell * spacing
    box = np.ptp(np.asarray(reference, np.float64), axis=0) + 2 * band * spacing
    while float(np.prod(box / (GRID_BLOCK * edge) + 3)) * 4 > max_bytes / 4:  # the dense table of blocks alone
        edge *= 1.25  # a long part at a fine spacing: coarser cells rather than a table of gigabytes
    while True:
        grid = nearest_grid(reference, edge, band * spacing, k, tree=tree)
        if grid.nbytes <= max_bytes:
            return grid
        edge *= 1.25


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2, thread_name_prefix="edgead-ops")


def median_spacing(points: np.ndarray, tree, sample: int = 4096) -> float:
    """Median distance from a point to its nearest other point, over a stride subsample. (N, 3) -> float."""
    return float(np.median(tree.query(points[stride_subsample(len(points), sample)], k=2)[0][:, 1]))


def point_distance(points: np.ndarray, reference: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point to ``reference[idx]``, float32 as sqrt((dx^2 + dy^2) + dz^2) (the CUDA
    kernels' order). (N, 3), (R, 3), (N,) -> (N,) float32."""
    return np.sqrt(_squared(points, reference[idx]))


def axis_angle(axis, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about ``axis`` (any non-zero length), by Rodrigues' formula: an exact rotation.
    (3,), float -> (3, 3) float64. The one rotation builder; cast where float32 is needed."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / max(float(np.linalg.norm(a)), 1e-300)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle uniform in [-max_angle, max_angle] radians: pose jitter
    (small ``max_angle``) or any orientation (pi). -> (3, 3) float32."""
    return axis_angle(rng.normal(size=3), rng.uniform(-max_angle, max_angle)).astype(np.float32)


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid motion mapping paired points ``src`` onto ``dst``. (M, 3), (M, 3) -> R (3, 3), t (3,)."""
    cs, cd = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - cs).T.astype(np.float64) @ (dst - cd).astype(np.float64))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r.astype(np.float32), (cd - r @ cs).astype(np.float32)


def estimate_normals(points: np.ndarray, k: int = 16) -> np.ndarray:
    """Unit surface normals (sign arbitrary) from the PCA of each point's k-neighbourhood. (N, 3) -> (N, 3) float32."""
    _, idx = knn(points, points, min(k, len(points)))
    nb = points[idx].astype(np.float64)
    nb -= nb.mean(1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))
    return vecs[:, :, 0].astype(np.float32)  # eigenvector of the smallest eigenvalue


def plane_step(src: np.ndarray, dst: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One linearised point-to-plane step: the small rigid motion moving ``src`` onto the tangent planes
    (``dst``, ``normals``). (M, 3) x3 -> R (3, 3), t (3,). Solved about the centroid of ``src`` for conditioning."""
    c = src.mean(0, dtype=np.float64)
    p, q, n = src - c, dst - c, normals.astype(np.float64)
    a = np.concatenate([np.cross(p, n), n], axis=1)  # (M, 6): d(residual)/d(omega, v)
    b = ((q - p) * n).sum(1)
    # normal equations (6 x 6) without BLAS: a threaded lstsq on (M, 6) stalls for tens of ms on a busy CPU
    x = np.linalg.lstsq(np.einsum("mi,mj->ij", a, a), np.einsum("mi,m->i", a, b), rcond=None)[0]
    r = axis_angle(x[:3], float(np.linalg.norm(x[:3])))
    return r.astype(np.float32), (c + x[3:] - r @ c).astype(np.float32)


def rigid_icp(source: np.ndarray, target: np.ndarray, iters: int = 60, trim: float = 0.9,
              tol: float = 1e-6, normals: np.ndarray | None = None, tree: KDTree | None = None,
              init: tuple[np.ndarray, np.ndarray] | None = None, inlier: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Align ``source`` to ``target`` (ICP from bounding-box centres). (M, 3), (N, 3) -> R, t.

    Matches go from source to target, so a one-sided scan (source) aligns to a full 360-degree template (target).
    Each iteration keeps the ``trim`` fraction of closest pairs so that defects and clutter do not pull the fit.
    Point-to-point by default; with the target's ``normals`` (N, 3) point-to-plane, which does not creep along
    smooth surfaces and converges in a few iterations. ``tree``: a prebuilt tree over ``target`` to reuse (any
    with ``query(points, k=1) -> (dist, idx)``: pykdtree's, or scipy's single-threaded ``cKDTree``);
    ``init``: a starting pose (R, t) instead of the bounding-box centres. ``inlier``: pairs closer than this always
    count, whatever ``trim`` says: on a one-sided view of a mostly flat part the few points that fix the pose in the
    plane (edges, holes, bosses) are the farthest while the pose is slightly off, and trimming them away lets ICP
    slide. Apply as ``source @ R.T + t``.
    """
    if tree is None:
        tree = KDTree(np.ascontiguousarray(target, dtype=np.float32))
    if init is None:
        r, t = np.eye(3, dtype=np.float32), (bbox_center(target) - bbox_center(source)).astype(np.float32)
    else:
        r, t = (np.asarray(a, dtype=np.float32) for a in init)
    prev = np.inf
    for _ in range(iters):
        moved = (source @ r.T + t).astype(np.float32)
        dist, idx = tree.query(moved, k=1)
        cap = max(np.quantile(dist, trim), inlier)
        keep = dist <= cap
        if normals is None:
            dr, dt = kabsch(moved[keep], target[idx[keep]])
        else:
            dr, dt = plane_step(moved[keep], target[idx[keep]], normals[idx[keep]])
        r, t = dr @ r, dr @ t + dt
        # the kept set grows as the fit improves: with ``inlier``, measure progress on every pair, capped
        err = float(np.mean(np.minimum(dist, cap) ** 2) if inlier else np.mean(dist[keep] ** 2))
        if prev - err < tol * max(prev, 1e-12):
            break
        prev = err
    return r.astype(np.float32), t.astype(np.float32)


def rigid_transform(points: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``points @ r.T + t`` for whole frames: (N, 3), (3, 3), (3,) -> (N, 3) float32.

    Column by column rather than a BLAS call: on 2 cores OpenBLAS threads keep spinning after the product and slow
    the k-d tree queries that follow by 2-3x (measured in docs/performance.md)."""
    cols = [points[:, j].astype(np.float32, copy=False) for j in range(3)]
    out = np.empty((len(points), 3), dtype=np.float32)
    for i in range(3):
        out[:, i] = cols[0] * np.float32(r[i, 0]) + cols[1] * np.float32(r[i, 1]) + cols[2] * np.float32(r[i, 2]) \
            + np.float32(t[i])
    return out


def to_model_frame(points: np.ndarray, norm: Normalization, reference: np.ndarray | None = None,
                   icp_points: int = 2048, normals: np.ndarray | None = None, tree=None) -> np.ndarray:
    """(N, 3) sensor units -> (N, 3) float32 in a network's frame: bounding-box centre at 0, the fixed training
    scale, and, given a ``reference`` (R, 3) in that frame, ICP-aligned to it on a stride subsample of
    ``icp_points`` points (point-to-plane given the reference's ``normals`` (R, 3): 4x faster than point-to-point
    on test scans, same residual). Parts arrive at any offset and pose, one-sided or full; the networks see one
    frame. ``tree``: a prepared nearest-point index over ``reference`` (a :class:`NearestIndex`), else built here."""
    center = bbox_center(points)
    if reference is None or len(points) < 3:
        return norm.apply(points, center)
    sub = norm.apply(points[stride_subsample(len(points), icp_points)], center)
    r, t = rigid_icp(sub, reference, normals=normals, tree=tree)
    return rigid_transform(points - center, r / np.float32(norm.scale), t)  # normalise and align in one pass
