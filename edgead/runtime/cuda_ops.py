"""The geometry ops of :mod:`edgead.ops` on the GPU: the grouping kernels of ``edgead/kernels`` through pycuda.

``CudaOps`` has the signatures of ``edgead.ops`` (``farthest_point_sample``, ``knn``, ``group``,
``nearest_distance``) and returns the same results (same FPS indices, same neighbours), so the TensorRT backend
swaps it in as ``pipeline.ops``. It runs in the device's primary context (the one TensorRT uses; ``pycuda.autoinit``
would create a second one), on one stream, with device buffers allocated once per size and reused, and loads the
PTX/cubin that ``edgead export`` compiled: an edge box needs no nvcc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead import ops

FPS_THREADS, KNN_TILE, KNN_SMALL_MAX, KNN_SELECT_MAX, KNN_SELECT_THREADS = 256, 256, 16, 1024, 256


def primary_context():
    """Push GPU 0's primary context (shared with TensorRT) and return it."""
    import pycuda.driver as cuda

    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    return ctx


def module_file(folder: Path, stem: str, arch: str | None) -> Path:
    """The cubin for this GPU if export built one, else the PTX (JIT-compiled by the driver)."""
    cubin = Path(folder) / f"edgead_{stem}.{arch}.cubin"
    return cubin if arch and cubin.exists() else Path(folder) / f"edgead_{stem}.ptx"


class CudaOps:
    def __init__(self, kernel_dir: Path, stream=None):
        import pycuda.driver as cuda

        self.cuda = cuda
        dev = cuda.Context.get_device()
        major, minor = dev.compute_capability()
        fps = cuda.module_from_file(str(module_file(kernel_dir, "fps", f"sm_{major}{minor}")))
        knn = cuda.module_from_file(str(module_file(kernel_dir, "knn", f"sm_{major}{minor}")))
        self.fps_step = fps.get_function("fps_step")
        self.fps_step.prepare("PiPPPPii")
        self.fps_finish = fps.get_function("fps_finish")
        self.fps_finish.prepare("PPiPi")
        self.knn_small = knn.get_function("knn_small")
        self.knn_small.prepare("PiPiiPP")
        self.knn_select = knn.get_function("knn_select")
        self.knn_select.prepare("PPiiPP")
        self.gather = knn.get_function("gather_patches")
        self.gather.prepare("PPPiiP")
        # FPS grid: enough blocks to fill every SM twice over, never more than the kernel's partial buffer.
        self.fps_blocks = min(2 * dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT), 1024)
        self.stream = stream or cuda.Stream()
        self._dev: dict[str, object] = {}
        self._host: dict[str, np.ndarray] = {}

    # ---- buffers: allocated once per (name, size) and reused
    def _buffer(self, name: str, nbytes: int):
        buf = self._dev.get(name)
        if buf is None or buf.size < nbytes:
            buf = self.cuda.mem_alloc(max(nbytes, 4))
            self._dev[name] = buf
        return buf

    def _upload(self, name: str, array: np.ndarray):
        host = self._host.get(name)
        if host is None or host.nbytes < array.nbytes:
            host = self.cuda.pagelocked_empty(array.nbytes, np.uint8)
            self._host[name] = host
        host[: array.nbytes] = np.ascontiguousarray(array).view(np.uint8).ravel()
        dev = self._buffer(name, array.nbytes)
        self.cuda.memcpy_htod_async(dev, host[: array.nbytes], self.stream)
        return dev

    def _download(self, dev, shape, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        host = self._host.get("out")
        if host is None or host.nbytes < nbytes:
            host = self._host["out"] = self.cuda.pagelocked_empty(nbytes, np.uint8)
        self.cuda.memcpy_dtoh_async(host[:nbytes], dev, self.stream)
        self.stream.synchronize()
        return host[:nbytes].view(dtype).reshape(shape).copy()

    # ---- edgead.ops signatures
    def farthest_point_sample(self, points: np.ndarray, m: int, start: int = 0) -> np.ndarray:
        n = len(points)
        if not 1 <= m <= n:
            raise ValueError(f"farthest_point_sample: cannot pick {m} of {n} points")
        pts = self._upload("fps_points", np.asarray(points, dtype=np.float32))
        dist = self._buffer("fps_dist", 4 * n)
        nb = max(1, min(self.fps_blocks, -(-n // FPS_THREADS)))
        pval, pidx = self._buffer("fps_pval", 8 * nb), self._buffer("fps_pidx", 8 * nb)
        out = self._buffer("fps_out", 8 * m)
        for j in range(1, m):
            self.fps_step.prepared_async_call((nb, 1), (FPS_THREADS, 1, 1), self.stream, pts, n, dist, pval, pidx,
                                              out, j, int(start))
        if m > 1:
            self.fps_finish.prepared_async_call((1, 1), (FPS_THREADS, 1, 1), self.stream, pval, pidx, nb, out, m)
        idx = self._download(out, (m,), np.int64)
        idx[0] = start  # m == 1: no step wrote it
        return idx

    def _knn_device(self, query: np.ndarray, ref: np.ndarray, k: int, ref_name: str = "knn_ref"):
        if not 1 <= k <= len(ref):
            raise ValueError(f"knn: cannot find {k} neighbours among {len(ref)} points")
        if k > KNN_SELECT_MAX:
            raise ValueError(f"knn: k = {k} above the GPU kernel's limit of {KNN_SELECT_MAX}")
        m, n = len(query), len(ref)
        q = self._upload("knn_query", np.asarray(query, dtype=np.float32))
        r = self._upload(ref_name, np.asarray(ref, dtype=np.float32))
        dist, idx = self._buffer("knn_dist", 4 * m * k), self._buffer("knn_idx", 4 * m * k)
        if k <= KNN_SMALL_MAX:
            self.knn_small.prepared_async_call((-(-m // KNN_TILE), 1), (KNN_TILE, 1, 1), self.stream,
                                               q, m, r, n, k, dist, idx)
        else:
            self.knn_select.prepared_async_call((m, 1), (KNN_SELECT_THREADS, 1, 1), self.stream, q, r, n, k,
                                                dist, idx)
        return r, q, dist, idx

    def knn(self, query: np.ndarray, ref: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, _, dist, idx = self._knn_device(query, ref, k)
        m = len(query)
        return self._download(dist, (m, k), np.float32), self._download(idx, (m, k), np.int32).astype(np.int64)

    def group(self, points: np.ndarray, centers: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        r, q, _, idx = self._knn_device(centers, points, k)
        g = len(centers)
        patches = self._buffer("patches", 12 * g * k)
        self.gather.prepared_async_call((-(-3 * g * k // 256), 1), (256, 1, 1), self.stream, r, q, idx, g, k, patches)
        return self._download(patches, (g, k, 3), np.float32), self._download(idx, (g, k), np.int32).astype(np.int64)

    def nearest_distance(self, query: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return self.knn(query, ref, 1)[0][:, 0]

    def __getattr__(self, name):  # everything else (bbox_center, Normalization, rigid_icp, ...) stays on the CPU
        return getattr(ops, name)
