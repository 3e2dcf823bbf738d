import numpy as np
import pytest
from scipy.spatial import cKDTree

from edgead import ops


def cloud(n, seed=0):
    return (np.random.default_rng(seed).random((n, 3)) * 100).astype(np.float32)


def test_fps_matches_reference_and_is_deterministic():
    pts = cloud(5000)
    pts[100] = pts[200]  # a duplicate point: ties must resolve the same way in both
    for start in (0, 17):
        fast = ops.farthest_point_sample(pts, 128, start)
        assert fast[0] == start
        np.testing.assert_array_equal(fast, ops.farthest_point_sample_reference(pts, 128, start))
        np.testing.assert_array_equal(fast, ops.farthest_point_sample(pts, 128, start))
    assert len(np.unique(fast)) == 128


def test_fps_spreads_points():
    pts = cloud(4000)
    idx = ops.farthest_point_sample(pts, 64)
    rand = np.random.default_rng(1).choice(len(pts), 64, replace=False)
    cover = lambda i: ops.nearest_distance(pts, pts[i]).max()  # noqa: E731
    assert cover(idx) < cover(rand)


def test_fps_rejects_too_many():
    with pytest.raises(ValueError, match="cannot pick"):
        ops.farthest_point_sample(cloud(10), 11)


def test_knn_and_group_against_brute_force():
    pts, q = cloud(3000), cloud(50, seed=1)
    d, i = ops.knn(q, pts, 8)
    brute = np.linalg.norm(q[:, None] - pts[None], axis=2)
    np.testing.assert_array_equal(i, np.argsort(brute, axis=1, kind="stable")[:, :8])
    np.testing.assert_allclose(d, np.sort(brute, axis=1)[:, :8], rtol=1e-5)
    patches, gi = ops.group(pts, q, 8)
    assert patches.shape == (50, 8, 3) and patches.dtype == np.float32
    np.testing.assert_allclose(patches, pts[gi] - q[:, None], atol=1e-5)


def test_normalization_roundtrip_and_scale():
    pts = cloud(1000) + np.float32(5000)
    norm = ops.Normalization.fit([pts])
    c = ops.bbox_center(pts)
    unit = norm.apply(pts, c)
    assert abs(np.linalg.norm(unit, axis=1).max() - 1) < 1e-5
    np.testing.assert_allclose(norm.invert(unit, c), pts, atol=1e-2)


def test_stride_subsample():
    np.testing.assert_array_equal(ops.stride_subsample(5, 10), np.arange(5))
    idx = ops.stride_subsample(1000, 100)
    assert len(idx) == 100 and idx[0] == 0 and np.all(np.diff(idx) == 10)


def rotation(deg, axis=2):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m.astype(np.float32)


def test_kabsch_recovers_motion():
    src = cloud(200)
    r, t = rotation(30, 0) @ rotation(20), np.array([5, -3, 8], np.float32)
    est_r, est_t = ops.kabsch(src, src @ r.T + t)
    np.testing.assert_allclose(est_r, r, atol=1e-4)
    np.testing.assert_allclose(est_t, t, atol=1e-2)


def test_icp_aligns_partial_view_to_full_template():
    rng = np.random.default_rng(0)
    # an asymmetric part: an ellipsoid surface with a bump, in millimetres far from the origin
    v = rng.normal(size=(20000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    full = (v * [40, 25, 15] + 10 * np.exp(-((v[:, 0] - 0.7) ** 2) * 20)[:, None] * v).astype(np.float32)
    partial = full[full[:, 2] > -2]  # one-sided view
    r, t = rotation(8), np.array([300, -120, 900], np.float32)
    moved = partial @ r.T + t
    est_r, est_t = ops.rigid_icp(moved, full)
    aligned = moved @ est_r.T + est_t
    assert np.abs(aligned - partial).max() < 0.5  # mm


def test_estimate_normals_on_a_sphere():
    v = np.random.default_rng(0).normal(size=(5000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    n = ops.estimate_normals((v * 50).astype(np.float32))
    assert np.median(np.abs((n * v).sum(1))) > 0.999  # radial, up to sign
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)


def test_point_to_plane_icp_converges_in_few_iterations():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(20000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    full = (v * [40, 25, 15]).astype(np.float32)  # a smooth ellipsoid: point-to-point ICP creeps along it
    partial = full[full[:, 2] > -2]
    r, t = rotation(4, 1) @ rotation(6), np.array([300, -120, 900], np.float32)
    moved = partial @ r.T + t
    est_r, est_t = ops.rigid_icp(moved, full, iters=10, normals=ops.estimate_normals(full))
    assert np.abs(moved @ est_r.T + est_t - partial).max() < 0.05  # mm


def voxel_of(points, size):
    """The documented voxel of each point: floor(x * (1 / size)) per axis, in float32."""
    return np.floor(points * np.float32(1.0 / size)).astype(np.int64)


def test_voxel_representatives_share_a_voxel_and_cover_every_point():
    pts = cloud(200_000)
    pts[-1] = [5e4, -3e4, 1e5]  # a stray point far away must not be merged with anything
    for size in (0.5, 2.0, 7.0):
        reps, owner = ops.voxel_representatives(pts, size)
        vox = voxel_of(pts, size)
        distinct = len(np.unique(vox, axis=0))
        assert np.array_equal(vox[reps[owner]], vox)  # every point's representative is in its voxel
        assert np.array_equal(owner[reps], np.arange(len(reps)))  # representatives represent themselves
        assert np.all(np.diff(reps) > 0) and owner[-1] == len(reps) - 1  # ascending; the stray point alone
        assert distinct <= len(reps) <= 1.1 * distinct  # hash collisions only cost a few extra representatives
        again = ops.voxel_representatives(pts.copy(), size)
        assert np.array_equal(again[0], reps) and np.array_equal(again[1], owner)
    identity = np.arange(len(pts))
    for reps, owner in (ops.voxel_representatives(pts, 0.0), ops.voxel_representatives(pts, 1e-30)):
        assert np.array_equal(reps, identity) and np.array_equal(owner, identity)  # off, or too many voxels


def test_score_by_voxel_spreads_exact_scores_within_the_voxel_diagonal():
    pts, ref = cloud(50_000, seed=1), cloud(3000, seed=2)
    exact = ops.nearest_distance(pts, ref)
    size = 4.0  # 15625 voxels for 50k points
    spread = ops.score_by_voxel(pts, size, lambda q: ops.nearest_distance(q, ref))
    reps, _ = ops.voxel_representatives(pts, size)
    np.testing.assert_array_equal(spread[reps], exact[reps])  # representatives get their own exact score
    # a distance to a set is 1-Lipschitz: a point differs from its representative by at most the voxel diagonal
    assert np.abs(spread - exact).max() <= size * np.sqrt(3) + 1e-4
    assert len(reps) < len(pts) / 2
    np.testing.assert_array_equal(ops.score_by_voxel(pts, 0, lambda q: ops.nearest_distance(q, ref)), exact)


def test_rigid_transform_matches_the_matrix_product():
    pts = cloud(10_000)
    r = ops.kabsch(pts[:3] @ np.diag([1, -1, -1]).astype(np.float32), pts[:3])[0]
    t = np.array([1.5, -2.0, 300.0], np.float32)
    np.testing.assert_allclose(ops.rigid_transform(pts, r, t), pts @ r.T + t, rtol=1e-6, atol=1e-4)
    assert ops.rigid_transform(pts.astype(np.float64), r, t).dtype == np.float32


def test_voxel_grid_is_fixed_in_space():
    """The grid does not follow the frame's extent: a cloud and the same cloud moved by whole voxels (exactly,
    coordinates on a 1/1024 grid) get the same representatives; a far point widens the box, not the voxels."""
    pts = (np.round(cloud(20_000, seed=3) * 1024) / 1024).astype(np.float32)
    reps, owner = ops.voxel_representatives(pts, 0.5)
    for moved in (pts + np.float32(64.0), pts - np.float32(32.5)):
        again = ops.voxel_representatives(moved, 0.5)
        assert np.array_equal(again[0], reps) and np.array_equal(again[1], owner)
    wider = np.r_[pts, [[-500.0, 0.0, 900.0]]].astype(np.float32)
    reps, owner = ops.voxel_representatives(wider, 0.5)
    assert np.array_equal(voxel_of(wider, 0.5)[reps[owner]], voxel_of(wider, 0.5)) and owner[-1] == len(reps) - 1


def shell(n, seed=0, noise=0.0):
    """(n, 3) float32: points on an ellipsoid (mm, far from the origin) with optional normal noise."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (v * [40, 25, 15] + [300, -120, 900] + rng.normal(scale=noise, size=(n, 3))).astype(np.float32)


def brute_nearest_distance(points, ref):
    """The exact nearest distance in the grid's arithmetic, by brute force: (N,) float32."""
    return np.sqrt(np.min(ops._squared(points[:, None, :], ref[None, :, :]), axis=1))


@pytest.fixture(scope="module")
def reference_grid():
    ref = shell(6000)
    return ref, ops.reference_grid(ref)


def test_grid_answers_are_the_exact_nearest_distances(reference_grid):
    """Wherever the grid certifies a point, its candidate is a nearest reference point, bit for bit; near the
    surface it certifies almost everything, far away nothing."""
    ref, grid = reference_grid
    near = np.r_[shell(3000, 1, noise=0.3), ref[:500]]
    far = shell(200, 2) * np.float32(1.5)
    idx = ops.grid_nearest(grid, ref, np.r_[near, far])
    ok = idx >= 0
    assert ok[:len(near)].mean() > 0.95 and not ok[len(near):].any()
    exact = brute_nearest_distance(np.r_[near, far], ref)
    np.testing.assert_array_equal(ops.point_distance(np.r_[near, far][ok], ref, idx[ok]), exact[ok])
    assert (grid.cells < 0).any()  # crowded cells use the wider overflow rows, and are exact too


def test_nearest_index_is_exact_everywhere_and_threads_change_nothing(reference_grid):
    ref, grid = reference_grid
    index = ops.NearestIndex(ref, cKDTree(ref), grid)
    q = np.r_[shell(4000, 3, noise=0.5), shell(100, 4) * np.float32(1.2), [[1e6, -1e6, 0.0]]].astype(np.float32)
    dist, idx = index.query(q)
    np.testing.assert_array_equal(dist, brute_nearest_distance(q, ref))
    np.testing.assert_array_equal(dist, ops.point_distance(q, ref, idx))
    tree_only = ops.NearestIndex(ref, cKDTree(ref))
    np.testing.assert_array_equal(tree_only.query(q)[0], dist)
    index.PARALLEL = 1000  # split over two threads: same answers
    np.testing.assert_array_equal(index.query(q)[0], dist)


def test_grid_on_ties_and_duplicates():
    """A lattice with repeated points: every cell of a lattice has exactly equidistant reference points."""
    g = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0), np.arange(3.0)), -1).reshape(-1, 3)
    ref = np.r_[g, g[:50]].astype(np.float32)
    grid = ops.nearest_grid(ref, 0.4, 1.5)
    q = (np.random.default_rng(5).uniform(-1, 31, (5000, 3)) * [1, 1, 0.1]).astype(np.float32)
    idx = ops.grid_nearest(grid, ref, q)
    ok = idx >= 0
    assert ok.mean() > 0.9
    np.testing.assert_array_equal(ops.point_distance(q[ok], ref, idx[ok]), brute_nearest_distance(q[ok], ref))


def test_grid_memory_bound_and_state_roundtrip(reference_grid):
    ref, grid = reference_grid
    small = ops.reference_grid(ref, max_bytes=grid.nbytes // 3)
    assert small.nbytes <= grid.nbytes // 3 and small.cell > grid.cell  # coarser cells, same exactness
    again = ops.NearestGrid.from_arrays(grid.arrays("g"), "g")
    q = shell(2000, 6, noise=0.2)
    np.testing.assert_array_equal(ops.grid_nearest(again, ref, q), ops.grid_nearest(grid, ref, q))
    assert ops.NearestGrid.from_arrays({}, "g") is None
    assert ops.reference_grid(np.zeros((100, 3), np.float32)) is None  # duplicates: no spacing, the tree answers
    rod = np.c_[np.linspace(0, 5000, 20000), np.zeros((20000, 2))].astype(np.float32)  # 5 m at 0.25 mm spacing
    assert ops.reference_grid(rod, max_bytes=1 << 20).nbytes <= 1 << 20  # no dense table of the whole box first


def test_grid_distance_equals_the_indexed_distance(reference_grid):
    ref, grid = reference_grid
    q = np.r_[shell(3000, 7, noise=0.4), shell(50, 8) * np.float32(1.3)].astype(np.float32)
    idx = ops.grid_nearest(grid, ref, q)
    dist = ops.grid_distance(grid, ref, q)
    ok = idx >= 0
    np.testing.assert_array_equal(np.isnan(dist), ~ok)
    np.testing.assert_array_equal(dist[ok], ops.point_distance(q[ok], ref, idx[ok]))
    index = ops.NearestIndex(ref, cKDTree(ref), grid)
    np.testing.assert_array_equal(index.distance(q), index.query(q)[0])
