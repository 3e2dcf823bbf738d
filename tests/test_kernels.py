"""The CUDA grouping kernels: compiled with nvcc wherever it is installed, run through the real ``CudaOps`` against
edgead.ops where a GPU, pycuda and the compiled kernels are present (elsewhere those tests skip with the reason).
The CPU side of the contract (neighbours in (squared distance, index) order, ties included) is tested everywhere."""

import shutil
import subprocess
import threading

import numpy as np
import pytest

from edgead import ops
from edgead.export.kernels import KERNEL_SOURCES, NVCC_FLAGS, compile_kernels, gpu_arch, ptx_requirements
from edgead.runtime.cuda_ops import frame_grid

nvcc = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(nvcc is None, reason="nvcc not installed")


@needs_nvcc
def test_every_kernel_compiles_without_warnings(tmp_path):
    for cu in sorted(KERNEL_SOURCES.glob("*.cu")):
        proc = subprocess.run([nvcc, *NVCC_FLAGS, "-Xptxas", "-Werror", "-cubin", "-arch=sm_87",
                               "-o", str(tmp_path / f"{cu.stem}.cubin"), str(cu)], capture_output=True, text=True)
        assert proc.returncode == 0 and "warning" not in proc.stderr.lower(), proc.stderr


@needs_nvcc
def test_export_compiles_the_entry_points_the_launcher_uses(tmp_path):
    info = compile_kernels(tmp_path)
    assert set(info["modules"]) == {"fps", "grid", "knn"} and "--fmad=false" in info["flags"]
    assert info["ptx_isa"] and info["min_driver"] and info["ptx_arch"] == "compute_75"  # the edge box's driver floor
    fps, knn, grid = ((tmp_path / f"edgead_{m}.ptx").read_text() for m in ("fps", "knn", "grid"))
    for entry in ("fps_step", "fps_finish", "fps_persistent"):
        assert f".entry {entry}(" in fps
    for entry in ("knn_small", "knn_select", "gather_patches"):
        assert f".entry {entry}(" in knn
    for entry in ("grid_nearest", "grid_count", "grid_scatter", "grid_knn"):
        assert f".entry {entry}(" in grid
    assert "fma.rn.f32" not in fps + knn + grid  # no contraction: distances bit-identical to numpy's


def test_ptx_requirements_read_the_isa_version():
    assert ptx_requirements("//\n.version 9.0\n.target sm_75\n") == {
        "ptx_isa": "9.0", "ptx_cuda": "13.0", "min_driver": "580.65.06", "ptx_arch": "compute_75"}
    assert ptx_requirements(".version 99.1\n")["min_driver"] is None  # newer than the table: unknown, not guessed


def grid_with_duplicates() -> np.ndarray:
    """A 1 mm grid (many exactly equidistant neighbours) with its first 50 points repeated."""
    g = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0), np.arange(3.0)), -1).reshape(-1, 3)
    return np.r_[g, g[:50]].astype(np.float32)


def queries(ref: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.r_[ref[::7], (ref[::11] + 0.5), rng.uniform(0, 20, (60, 3))].astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 3, 7, 16, 17, 32, 100, 511, 512, 1249, 1250])
def test_knn_orders_ties_by_index_on_grids_and_duplicates(k):
    """The CPU contract the kernels implement: (squared distance, index) order, ties at the k-th place keep the
    lowest indices. A k-d tree alone orders most tied rows of a grid differently."""
    ref = grid_with_duplicates()
    q = queries(ref)
    got, want = ops.knn(q, ref, k), ops.knn_reference(q, ref, k)
    np.testing.assert_array_equal(got.idx, want.idx)
    np.testing.assert_array_equal(got.dist, want.dist)
    patches, idx = ops.group(ref, q, k)
    np.testing.assert_array_equal(idx, want.idx)
    np.testing.assert_array_equal(patches, ref[want.idx] - q[:, None, :])


def test_grid_kernel_reads_the_layout_ops_writes():
    """grid_nearest indexes ops.NearestGrid's arrays: the same block edge, candidates width, overflow 2K wide."""
    source = (KERNEL_SOURCES / "grid.cu").read_text()
    assert f"#define GRID_BLOCK {ops.GRID_BLOCK}\n" in source
    assert f"#define GRID_BLOCK_SHIFT {ops.GRID_BLOCK.bit_length() - 1}\n" in source
    assert "overflow + (long long)(-row) * 2 * k" in source


def emulate_grid_knn(query: np.ndarray, ref: np.ndarray, k: int, seed: int = 0) -> ops.Neighbours:
    """grid.cu's grid_knn step by step on the CPU (float32 as the kernel computes): the grid CudaOps builds, points
    bucketed in a shuffled order (the kernel's scatter order is arbitrary), rings searched until the k-th squared
    distance is inside them, neighbours kept in (squared distance, index) order."""
    frame, dims = frame_grid(ref)
    origin, inv, cell = frame[:3], frame[3], frame[4]

    def cell_of(p):
        g = [min(max(np.float32((p[a] - origin[a]) * inv), np.float32(-1)), np.float32(dims[a])) for a in range(3)]
        return tuple(min(max(int(np.floor(g[a])), 0), dims[a] - 1) for a in range(3))

    buckets: dict = {}
    for j in np.random.default_rng(seed).permutation(len(ref)):
        buckets.setdefault(cell_of(ref[j]), []).append(int(j))
    dist, idx = np.empty((len(query), k), np.float32), np.empty((len(query), k), np.int64)
    for qi, q in enumerate(query):
        c, best = cell_of(q), []
        for r in range(max(dims) + 1):
            for off in np.ndindex(2 * r + 1, 2 * r + 1, 2 * r + 1):
                if max(abs(o - r) for o in off) == r:
                    for j in buckets.get(tuple(c[a] + off[a] - r for a in range(3)), []):
                        best.append((ops._squared(q, ref[j]), j))
            best = sorted(best)[:k]
            rim = np.float32(r) * cell
            if len(best) == k and best[-1][0] < rim * rim * np.float32(0.99999):
                break
        dist[qi], idx[qi] = np.sqrt([b[0] for b in best]), [b[1] for b in best]
    return ops.Neighbours(dist, idx)


@pytest.mark.parametrize("k", [1, 3, 8, 16])
def test_grid_knn_ring_search_is_exact_on_ties_duplicates_and_outside_queries(k):
    """The per-frame grid kernel's algorithm (emulated) returns ops.knn's neighbours, order of ties included."""
    lattice = grid_with_duplicates()
    rng = np.random.default_rng(k)
    surface = (rng.normal(size=(1500, 3)) * [10, 6, 0.2]).astype(np.float32)  # flat, uneven: empty and full cells
    for ref, q in ((lattice, queries(lattice)[::3]),
                   (surface, np.r_[surface[::20] + 0.3, [[80.0, -60.0, 5.0], [0.0, 0.0, 30.0]]].astype(np.float32))):
        got, want = emulate_grid_knn(q, ref, k), ops.knn(q, ref, k)
        np.testing.assert_array_equal(got.idx, want.idx)
        np.testing.assert_array_equal(got.dist, want.dist)


@pytest.fixture(scope="module")
def cuda_ops(tmp_path_factory):
    pytest.importorskip("pycuda", reason="pycuda not installed")
    if gpu_arch() is None or nvcc is None:
        pytest.skip("no CUDA GPU or no nvcc here")
    from edgead.runtime.cuda_ops import CudaOps, GpuContext

    folder = tmp_path_factory.mktemp("kernels")
    compile_kernels(folder)
    return CudaOps(folder, GpuContext(0))


def cloud(n, seed):
    return (np.random.default_rng(seed).random((n, 3)) * 100).astype(np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("n,m,start", [(1, 1, 0), (5000, 128, 17), (200_000, 512, 0), (65536, 2048, 3)])
def test_gpu_fps_equals_cpu(cuda_ops, n, m, start):
    pts = cloud(n, n)
    if n > 100:
        pts[100] = pts[200]  # a duplicate: ties resolve to the same index
    gpu = cuda_ops.farthest_point_sample(pts, m, start)
    np.testing.assert_array_equal(gpu, ops.farthest_point_sample(pts, m, start))
    assert cuda_ops.fps_aborts == 0  # the single-launch kernel ran (its grid was co-resident)


@pytest.mark.gpu
def test_gpu_fps_refuses_a_start_outside_the_cloud(cuda_ops):
    with pytest.raises(ValueError, match="start"):
        cuda_ops.farthest_point_sample(cloud(100, 0), 10, 100)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(1000, 3000, 1), (50_000, 8192, 3), (300, 5000, 5), (256, 16384, 16),
                                   (256, 16384, 17), (256, 16384, 32), (64, 20000, 100), (64, 20000, 511),
                                   (64, 20000, 512), (8, 2000, 1024)])
def test_gpu_knn_and_group_equal_cpu(cuda_ops, m, n, k):
    q, ref = cloud(m, 1), cloud(n, 2)
    d_gpu, i_gpu = cuda_ops.knn(q, ref, k)
    d_cpu, i_cpu = ops.knn(q, ref, k)
    np.testing.assert_array_equal(i_gpu, i_cpu)
    np.testing.assert_array_equal(d_gpu, d_cpu)
    patches_gpu, idx_gpu = cuda_ops.group(ref, q, k)
    np.testing.assert_array_equal(patches_gpu, ops.group(ref, q, k).patches)
    np.testing.assert_array_equal(idx_gpu, i_cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 3, 16, 17, 32, 512])
def test_gpu_ties_and_duplicates_equal_cpu(cuda_ops, k):
    ref = grid_with_duplicates()
    q = queries(ref)
    got, want = cuda_ops.knn(q, ref, k), ops.knn(q, ref, k)
    np.testing.assert_array_equal(got.idx, want.idx)
    np.testing.assert_array_equal(got.dist, want.dist)
    np.testing.assert_array_equal(cuda_ops.nearest_distance(q, ref), ops.nearest_distance(q, ref))


@pytest.mark.gpu
def test_gpu_ops_work_from_another_thread_and_leave_no_context_pushed(cuda_ops):
    """serve loads in one thread and detects in another; pycuda's context stack is per thread."""
    import pycuda.driver as cuda

    out, errors = [], []

    def work():
        try:
            out.append(cuda_ops.farthest_point_sample(cloud(3000, 5), 64, 0))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(60)
    assert not errors and len(out) == 1
    np.testing.assert_array_equal(out[0], ops.farthest_point_sample(cloud(3000, 5), 64, 0))
    assert cuda.Context.get_current() is None  # nothing left pushed in this thread either (pycuda aborts at exit)


@pytest.mark.gpu
def test_a_process_using_the_gpu_ops_exits_cleanly(cuda_ops, tmp_path):
    """pycuda aborts a process at exit (status 134) when a context is left on its stack: GpuContext pops it."""
    import sys

    compile_kernels(tmp_path)
    code = ("import sys, numpy as np\n"
            "from edgead.runtime.cuda_ops import CudaOps, GpuContext\n"
            "ops = CudaOps(sys.argv[1], GpuContext(0))\n"
            "print(ops.farthest_point_sample(np.random.default_rng(0).random((5000, 3), np.float32), 32)[:4])\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.gpu
def test_gpu_grid_lookup_and_grid_knn_equal_cpu(cuda_ops):
    """The template's grid lookup and the per-frame grid kNN (a cloud above GRID_KNN_MIN points) on the GPU."""
    rng = np.random.default_rng(3)
    v = rng.normal(size=(20000, 3))
    ref = (v / np.linalg.norm(v, axis=1, keepdims=True) * [40, 25, 15]).astype(np.float32)
    grid = ops.reference_grid(ref)
    pts = (ref[rng.integers(0, len(ref), 50000)] + rng.normal(scale=0.3, size=(50000, 3))).astype(np.float32)
    np.testing.assert_array_equal(cuda_ops.grid_nearest(grid, ref, pts), ops.grid_nearest(grid, ref, pts))
    for k in (3, 16):
        got, want = cuda_ops.knn(pts[:5000], ref, k), ops.knn(pts[:5000], ref, k)
        np.testing.assert_array_equal(got.idx, want.idx)
        np.testing.assert_array_equal(got.dist, want.dist)
