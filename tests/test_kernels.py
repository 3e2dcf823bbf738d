"""The CUDA grouping kernels: compiled with nvcc wherever it is installed, run against edgead.ops where a GPU,
pycuda and the compiled kernels are present (elsewhere those tests skip with the reason)."""

import shutil
import subprocess

import numpy as np
import pytest

from edgead import ops
from edgead.export import KERNEL_SOURCES, NVCC_FLAGS, compile_kernels

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
    assert set(info["modules"]) == {"fps", "knn"} and "--fmad=false" in info["flags"]
    fps, knn = (tmp_path / "edgead_fps.ptx").read_text(), (tmp_path / "edgead_knn.ptx").read_text()
    for entry in ("fps_step", "fps_finish", "fps_persistent"):
        assert f".entry {entry}(" in fps
    for entry in ("knn_small", "knn_select", "gather_patches"):
        assert f".entry {entry}(" in knn
    assert "fma.rn.f32" not in fps + knn  # no contraction: distances bit-identical to numpy's


@pytest.fixture(scope="module")
def cuda_ops(tmp_path_factory):
    pytest.importorskip("pycuda", reason="pycuda not installed")
    from edgead.export.trt import gpu_arch

    if gpu_arch() is None or nvcc is None:
        pytest.skip("no CUDA GPU or no nvcc here")
    from edgead.runtime.cuda_ops import CudaOps, primary_context

    folder = tmp_path_factory.mktemp("kernels")
    compile_kernels(folder)
    ctx = primary_context()
    yield CudaOps(folder)
    ctx.pop()


def cloud(n, seed):
    return (np.random.default_rng(seed).random((n, 3)) * 100).astype(np.float32)


@pytest.mark.parametrize("n,m,start", [(1, 1, 0), (5000, 128, 17), (200_000, 512, 0)])
def test_gpu_fps_equals_cpu(cuda_ops, n, m, start):
    pts = cloud(n, n)
    if n > 100:
        pts[100] = pts[200]  # a duplicate: ties resolve to the same index
    gpu = cuda_ops.farthest_point_sample(pts, m, start)
    np.testing.assert_array_equal(gpu, ops.farthest_point_sample(pts, m, start))


@pytest.mark.parametrize("m,n,k", [(1000, 3000, 1), (50_000, 8192, 3), (256, 16384, 32), (64, 20000, 512)])
def test_gpu_knn_and_group_equal_cpu(cuda_ops, m, n, k):
    q, ref = cloud(m, 1), cloud(n, 2)
    d_gpu, i_gpu = cuda_ops.knn(q, ref, k)
    d_cpu, i_cpu = ops.knn(q, ref, k)
    np.testing.assert_array_equal(i_gpu, i_cpu)
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-6)
    patches_gpu, _ = cuda_ops.group(ref, q, k)
    np.testing.assert_array_equal(patches_gpu, ops.group(ref, q, k)[0])
