"""The GPU-able geometry ops (``edgead.ops.GeometryOps``) as the CUDA kernels of ``edgead/kernels``, through pycuda.

``CudaOps`` returns what ``edgead.ops`` returns (same FPS indices, same neighbours in (distance, index) order), so a
pipeline built with it scores exactly as on the CPU. Neighbours (k <= 16) among a cloud of GRID_KNN_MIN points or
more come from a uniform grid built over it per call (``grid.cu``: count, scan, scatter, ring search), smaller
clouds and larger k from the brute-force kernels; ``grid_nearest`` is ``edgead.ops.grid_nearest`` on the GPU. It
loads the PTX/cubin that ``edgead export`` compiled (an edge box needs no nvcc) and keeps device and pinned host
buffers per name, grown when a frame needs more.

Context: everything runs in GPU 0's *primary* context, the one TensorRT and the CUDA runtime use (``pycuda.autoinit``
would create a second). pycuda's context stack is per thread and it aborts the process at exit if a context is
still pushed, so :class:`GpuContext` pushes the context around each call and pops it after: any thread may call
(``serve`` loads in one thread and detects in another) and nothing is left on the stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.ops import Groups, NearestGrid, Neighbours

FPS_THREADS, KNN_TILE, KNN_SMALL_MAX, KNN_SELECT_MAX, KNN_SELECT_THREADS = 256, 256, 16, 1024, 256
GRID_KNN_MIN = 1024  # reference points from which grid_knn replaces the brute-force knn_small
GRID_POINTS_PER_CELL = 4  # per-frame grid: about this many points per occupied cell of a surface
GRID_MAX_CELLS = 1 << 22


def frame_grid(ref: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The per-frame grid over ``ref`` (n, 3): frame (origin x, y, z, 1 / cell, cell) float32 and its cell counts
    per axis. Cells sized for about GRID_POINTS_PER_CELL points on a surface, at most GRID_MAX_CELLS of them."""
    lo, hi = ref.min(0).astype(np.float64), ref.max(0).astype(np.float64)
    extent = float((hi - lo).max())
    cell = extent * np.sqrt(GRID_POINTS_PER_CELL / max(len(ref), 1)) if extent > 0 else 1.0
    while True:
        dims = tuple(int(d) for d in np.floor((hi - lo) / cell).astype(np.int64) + 1)
        if np.prod(dims) <= GRID_MAX_CELLS:
            return np.array([*lo, 1.0 / cell, cell], np.float32), dims
        cell *= 1.5


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
            grid = cuda.module_from_file(str(module_file(kernel_dir, "grid", arch)))
            self.stream = stream or cuda.Stream()
        self.fps_step = _prepared(fps, "fps_step", "PiPPPPii")
        self.fps_finish = _prepared(fps, "fps_finish", "PPiPi")
        self.fps_persistent = _prepared(fps, "fps_persistent", "PiPPPPiiP")
        self.knn_small = _prepared(knn, "knn_small", "PiPiiPP")
        self.knn_select = _prepared(knn, "knn_select", "PPiiPP")
        self.gather = _prepared(knn, "gather_patches", "PPPiiP")
        self.grid_lookup = _prepared(grid, "grid_nearest", "PiPiiiPPPiPPP")
        self.grid_count = _prepared(grid, "grid_count", "PiPiiiPP")
        self.grid_scatter = _prepared(grid, "grid_scatter", "PiPPP")
        self.grid_knn = _prepared(grid, "grid_knn", "PiPPiiiPPiPP")
        self.sms = context.device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        self.fps_aborts = 0  # persistent FPS launches that found the grid not co-resident (then per-step ran)
        self._dev: dict[str, tuple[object, int]] = {}  # name -> (allocation, bytes): allocations know no size
        self._host: dict[str, np.ndarray] = {}
        self._lookup_source: tuple[NearestGrid, np.ndarray] | None = None  # the grid and reference on the device

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
        if k <= KNN_SMALL_MAX and n >= GRID_KNN_MIN:
            self._grid_knn(q, m, r, np.asarray(ref, dtype=np.float32), k, dist, idx)
        elif k <= KNN_SMALL_MAX:
            self.knn_small.prepared_async_call((-(-m // KNN_TILE), 1), (KNN_TILE, 1, 1), self.stream,
                                               q, m, r, n, k, dist, idx)
        else:
            self.knn_select.prepared_async_call((m, 1), (KNN_SELECT_THREADS, 1, 1), self.stream, q, r, n, k,
                                                dist, idx)
        return r, q, dist, idx

    def _grid_knn(self, q, m: int, r, ref: np.ndarray, k: int, dist, idx) -> None:
        """k nearest of m queries among ref (on the device as ``r``) through a grid built over ref here."""
        n = len(ref)
        frame, (nx, ny, nz) = frame_grid(ref)
        cells = nx * ny * nz
        f = self._upload("grid_frame", frame)
        cell_of, counts = self._buffer("grid_cell_of", 4 * n), self._buffer("grid_counts", 4 * cells)
        self.cuda.memset_d32_async(counts, 0, cells, self.stream)
        blocks = (-(-n // KNN_TILE), 1)
        self.grid_count.prepared_async_call(blocks, (KNN_TILE, 1, 1), self.stream, r, n, f, nx, ny, nz, cell_of,
                                            counts)
        starts = np.zeros(cells + 1, np.uint32)  # exclusive scan on the host: a few hundred kB at most
        np.cumsum(self._download(counts, (cells,), np.uint32), out=starts[1:])
        s = self._upload("grid_starts", starts)
        cursor, order = self._buffer("grid_cursor", 4 * cells), self._buffer("grid_order", 4 * n)
        self.cuda.memset_d32_async(cursor, 0, cells, self.stream)
        self.grid_scatter.prepared_async_call(blocks, (KNN_TILE, 1, 1), self.stream, cell_of, n, s, cursor, order)
        self.grid_knn.prepared_async_call((-(-m // KNN_TILE), 1), (KNN_TILE, 1, 1), self.stream, q, m, r, f, nx, ny,
                                          nz, s, order, k, dist, idx)

    def grid_nearest(self, grid: NearestGrid, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``edgead.ops.grid_nearest`` on the GPU: (N,) int64 nearest reference index, -1 where not certified."""
        n = len(points)
        if n == 0:
            return np.zeros(0, np.int64)
        with self.context:
            if self._lookup_source is None or self._lookup_source[0] is not grid \
                    or self._lookup_source[1] is not reference:  # a fixed reference's grid: uploaded once
                frame = np.r_[grid.origin, np.float32(1.0 / grid.cell)].astype(np.float32)
                for name, a in (("frame", frame), ("blocks", grid.blocks), ("cells", grid.cells),
                                ("candidates", grid.candidates), ("overflow", grid.overflow), ("ref", reference)):
                    self._upload(f"lookup_{name}", np.ascontiguousarray(a, dtype=a.dtype if name != "ref"
                                                                        else np.float32))
                self._lookup_source = (grid, reference)
            dev = {name: self._dev[f"lookup_{name}"][0] for name in
                   ("frame", "blocks", "cells", "candidates", "overflow", "ref")}
            pts = self._upload("lookup_points", np.asarray(points, dtype=np.float32))
            out = self._buffer("lookup_out", 8 * n)
            bx, by, bz = grid.blocks.shape
            self.grid_lookup.prepared_async_call((-(-n // KNN_TILE), 1), (KNN_TILE, 1, 1), self.stream, pts, n,
                                                 dev["frame"], bx, by, bz, dev["blocks"], dev["cells"],
                                                 dev["candidates"], grid.candidates.shape[1], dev["overflow"],
                                                 dev["ref"], out)
            return self._download(out, (n,), np.int64)

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


def _prepared(module, name: str, signature: str):
    """The kernel ``name`` of a loaded module, prepared with its argument ``signature`` (pycuda's struct codes:
    P pointer, i int)."""
    fn = module.get_function(name)
    fn.prepare(signature)
    return fn
