"""The GPU-able geometry ops (``edgead.ops.GeometryOps``) as the CUDA kernels of ``edgead/kernels``, through pycuda.

``CudaOps`` returns what ``edgead.ops`` returns (same FPS indices, same neighbours in (distance, index) order), so a
pipeline built with it scores exactly as on the CPU. It loads the PTX/cubin that ``edgead export`` compiled (an
edge box needs no nvcc) and keeps device and pinned host buffers per name, grown when a frame needs more.

Context: everything runs in GPU 0's *primary* context, the one TensorRT and the CUDA runtime use (``pycuda.autoinit``
would create a second). pycuda's context stack is per thread and it aborts the process at exit if a context is
still pushed, so :class:`GpuContext` pushes the context around each call and pops it after: any thread may call
(``serve`` loads in one thread and detects in another) and nothing is left on the stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.ops import Groups, Neighbours

FPS_THREADS, KNN_TILE, KNN_SMALL_MAX, KNN_SELECT_MAX, KNN_SELECT_THREADS = 256, 256, 16, 1024, 256


class GpuContext:
    """GPU ``device``'s primary context, retained once; ``with ctx:`` makes it current for the calling thread."""

    def __init__(self, device: int = 0):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.device = cuda.Device(device)
        self.context = self.device.retain_primary_context()

    def __enter__(self) -> GpuContext:
        self.context.push()
        return self

    def __exit__(self, *exc) -> None:
        self.cuda.Context.pop()


def module_file(folder: Path, stem: str, arch: str) -> Path:
    """The cubin for this GPU if export built one, else the PTX (JIT-compiled by the driver)."""
    cubin = Path(folder) / f"edgead_{stem}.{arch}.cubin"
    return cubin if cubin.exists() else Path(folder) / f"edgead_{stem}.ptx"


class CudaOps:
    """``GeometryOps`` on the GPU. ``stream``: the pycuda stream to run on (the TensorRT runner's, so kernels and
    the network are ordered on one stream)."""

    def __init__(self, kernel_dir: Path, context: GpuContext, stream=None):
        cuda = context.cuda
        self.cuda, self.context = cuda, context
        with context:
            major, minor = context.device.compute_capability()
            arch = f"sm_{major}{minor}"
            fps = cuda.module_from_file(str(module_file(kernel_dir, "fps", arch)))
            knn = cuda.module_from_file(str(module_file(kernel_dir, "knn", arch)))
            self.stream = stream or cuda.Stream()
        self.fps_step = fps.get_function("fps_step")
        self.fps_step.prepare("PiPPPPii")
        self.fps_finish = fps.get_function("fps_finish")
        self.fps_finish.prepare("PPiPi")
        self.fps_persistent = fps.get_function("fps_persistent")
        self.fps_persistent.prepare("PiPPPPiiP")
        self.knn_small = knn.get_function("knn_small")
        self.knn_small.prepare("PiPiiPP")
        self.knn_select = knn.get_function("knn_select")
        self.knn_select.prepare("PPiiPP")
        self.gather = knn.get_function("gather_patches")
        self.gather.prepare("PPPiiP")
        self.sms = context.device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        self.fps_aborts = 0  # persistent FPS launches that found the grid not co-resident (then per-step ran)
        self._dev: dict[str, tuple[object, int]] = {}  # name -> (allocation, bytes): allocations know no size
        self._host: dict[str, np.ndarray] = {}

    # ---- buffers: allocated once per name, grown when a frame needs more
    def _buffer(self, name: str, nbytes: int):
        buf, size = self._dev.get(name, (None, 0))
        if size < nbytes:
            if buf is not None:
                buf.free()
            size = max(nbytes, 4)
            buf = self.cuda.mem_alloc(size)
            self._dev[name] = (buf, size)
        return buf

    def _pinned(self, name: str, nbytes: int) -> np.ndarray:
        host = self._host.get(name)
        if host is None or host.nbytes < nbytes:
            host = self._host[name] = self.cuda.pagelocked_empty(max(nbytes, 4), np.uint8)
        return host

    def _upload(self, name: str, array: np.ndarray):
        array = np.ascontiguousarray(array)
        host = self._pinned(name, array.nbytes)
        host[: array.nbytes] = array.view(np.uint8).ravel()
        dev = self._buffer(name, array.nbytes)
        self.cuda.memcpy_htod_async(dev, host[: array.nbytes], self.stream)
        return dev

    def _download(self, dev, shape: tuple, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        host = self._pinned("out", nbytes)
        self.cuda.memcpy_dtoh_async(host[:nbytes], dev, self.stream)
        self.stream.synchronize()
        return host[:nbytes].view(dtype).reshape(shape).copy()

    # ---- GeometryOps
    def farthest_point_sample(self, points: np.ndarray, m: int, start: int = 0) -> np.ndarray:
        n = len(points)
        if not 1 <= m <= n:
            raise ValueError(f"farthest_point_sample: cannot pick {m} of {n} points")
        if not 0 <= start < n:
            raise ValueError(f"farthest_point_sample: start {start} outside 0..{n - 1}")
        with self.context:
            pts = self._upload("fps_points", np.asarray(points, dtype=np.float32))
            dist = self._buffer("fps_dist", 4 * n)
            out = self._buffer("fps_out", 8 * m)
            if m > 1:
                nb = max(1, min(self.sms, -(-n // FPS_THREADS)))  # persistent: one resident block per SM at most
                pval, pidx = self._buffer("fps_pval", 8 * nb), self._buffer("fps_pidx", 8 * nb)
                sync = self._buffer("fps_sync", 12)
                self.cuda.memset_d32_async(sync, 0, 3, self.stream)
                self.fps_persistent.prepared_async_call((nb, 1), (FPS_THREADS, 1, 1), self.stream, pts, n, dist,
                                                        pval, pidx, out, m, int(start), sync)
                if self._download(sync, (3,), np.uint32)[2]:  # the grid was not co-resident: step by step
                    self.fps_aborts += 1
                    self._fps_steps(pts, n, dist, out, m, int(start))
            idx = self._download(out, (m,), np.int64)
        idx[0] = start  # m == 1: no kernel wrote it
        return idx

    def _fps_steps(self, pts, n: int, dist, out, m: int, start: int) -> None:
        nb = max(1, min(2 * self.sms, 1024, -(-n // FPS_THREADS)))
        pval, pidx = self._buffer("fps_pval", 8 * nb), self._buffer("fps_pidx", 8 * nb)
        for j in range(1, m):
            self.fps_step.prepared_async_call((nb, 1), (FPS_THREADS, 1, 1), self.stream, pts, n, dist, pval, pidx,
                                              out, j, start)
        self.fps_finish.prepared_async_call((1, 1), (FPS_THREADS, 1, 1), self.stream, pval, pidx, nb, out, m)

    def _knn_device(self, query: np.ndarray, ref: np.ndarray, k: int):
        m, n = len(query), len(ref)
        if not 1 <= k <= n:
            raise ValueError(f"knn: cannot find {k} neighbours among {n} points")
        if k > KNN_SELECT_MAX:
            raise ValueError(f"knn: k = {k} above the GPU kernel's limit of {KNN_SELECT_MAX}")
        q = self._upload("knn_query", np.asarray(query, dtype=np.float32))
        r = self._upload("knn_ref", np.asarray(ref, dtype=np.float32))
        dist, idx = self._buffer("knn_dist", 4 * m * k), self._buffer("knn_idx", 4 * m * k)
        if m == 0:
            return r, q, dist, idx
        if k <= KNN_SMALL_MAX:
            self.knn_small.prepared_async_call((-(-m // KNN_TILE), 1), (KNN_TILE, 1, 1), self.stream,
                                               q, m, r, n, k, dist, idx)
        else:
            self.knn_select.prepared_async_call((m, 1), (KNN_SELECT_THREADS, 1, 1), self.stream, q, r, n, k,
                                                dist, idx)
        return r, q, dist, idx

    def knn(self, query: np.ndarray, ref: np.ndarray, k: int) -> Neighbours:
        m = len(query)
        with self.context:
            _, _, dist, idx = self._knn_device(query, ref, k)
            return Neighbours(self._download(dist, (m, k), np.float32),
                              self._download(idx, (m, k), np.int32).astype(np.int64))

    def group(self, points: np.ndarray, centers: np.ndarray, k: int) -> Groups:
        g = len(centers)
        with self.context:
            r, q, _, idx = self._knn_device(centers, points, k)
            patches = self._buffer("patches", 12 * g * k)
            if g:
                self.gather.prepared_async_call((-(-3 * g * k // 256), 1), (256, 1, 1), self.stream, r, q, idx, g, k,
                                                patches)
            return Groups(self._download(patches, (g, k, 3), np.float32),
                          self._download(idx, (g, k), np.int32).astype(np.int64))

    def nearest_distance(self, query: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return self.knn(query, ref, 1).dist[:, 0]
