"""Check and time the CUDA grouping kernels on a GPU machine (CuPy + nvcc + torch there; pycuda not needed).

    python benchmarks/gpu_kernels.py [--dry-run]

Compiles edgead/kernels/*.cu exactly as `edgead export` does (--fmad=false), runs them through CuPy's RawModule on
random, real-shaped and tied (grid, duplicated points) clouds, checks exact equality with edgead.ops (same FPS
indices, same neighbours in (distance, index) order, same patches, same grid answers), and times them with CUDA
events (median of repeats): FPS launched per step vs the persistent single-launch variant, knn_small (NN scoring)
and knn_select (grouping), the per-frame grid (grid_count, scan, grid_scatter, grid_knn) against knn_small, and
grid_nearest (the template's lookup in a fixed reference's NearestGrid) against edgead.ops.grid_nearest. Then times
the PyTorch eager inference graphs of the presets on the GPU. Prints a table last; writes everything to
$OUT/gpu_kernels.json when OUT is set.

``--dry-run`` (what CI runs): tiny sizes, the CPU references only; every GPU row is reported as skipped. It keeps the
script from rotting where no GPU is lent. edgead.ops needs pykdtree and fpsample: on a bare GPU machine install
their wheels first (benchmarks/gpu_run.sh does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgead import ops  # noqa: E402
from edgead.export.kernels import KERNEL_SOURCES, NVCC_FLAGS  # noqa: E402
from edgead.runtime.cuda_ops import frame_grid  # noqa: E402

FPS_THREADS, KNN_TILE, KNN_SMALL_MAX = 256, 256, 16


def compile_modules(cp) -> dict:
    arch = f"sm_{cp.cuda.Device(0).compute_capability}"  # e.g. "90"
    out = Path(tempfile.mkdtemp())
    mods = {}
    for cu in sorted(KERNEL_SOURCES.glob("*.cu")):
        cubin = out / f"{cu.stem}.cubin"
        subprocess.run(["nvcc", *NVCC_FLAGS, "-cubin", f"-arch={arch}", "-o", str(cubin), str(cu)], check=True)
        mods[cu.stem] = cp.RawModule(path=str(cubin))
    return mods


def timed(cp, fn, repeat: int = 20) -> float:
    """Median milliseconds of fn() over ``repeat`` runs after one warm-up, with CUDA events."""
    fn()
    times = []
    for _ in range(repeat):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b))
    return float(np.median(times))


def fps_gpu(cp, mods, pts, m: int, start: int, persistent: bool, blocks: int):
    n = len(pts)
    nb = max(1, min(blocks, -(-n // FPS_THREADS)))
    dist = cp.empty(n, cp.float32)
    pval, pidx = cp.empty(2 * nb, cp.float32), cp.empty(2 * nb, cp.int32)
    out = cp.full(m, -1, cp.int64)
    f = mods["fps"]
    if persistent:
        sync = cp.zeros(3, cp.uint32)
        f.get_function("fps_persistent")((nb,), (FPS_THREADS,), (pts, np.int32(n), dist, pval, pidx, out,
                                                                    np.int32(m), np.int32(start), sync))
        if int(sync[2]):
            raise RuntimeError("fps_persistent: the grid was not co-resident (barrier timed out)")
    else:
        step = f.get_function("fps_step")
        for j in range(1, m):
            step((nb,), (FPS_THREADS,), (pts, np.int32(n), dist, pval, pidx, out, np.int32(j), np.int32(start)))
        if m > 1:
            f.get_function("fps_finish")((1,), (FPS_THREADS,), (pval, pidx, np.int32(nb), out, np.int32(m)))
    out[0] = start
    return out


def knn_gpu(cp, mods, q, r, k: int):
    m, n = len(q), len(r)
    dist, idx = cp.full((m, k), cp.nan, cp.float32), cp.full((m, k), -1, cp.int32)
    if k <= KNN_SMALL_MAX:
        mods["knn"].get_function("knn_small")((-(-m // KNN_TILE),), (KNN_TILE,),
                                              (q, np.int32(m), r, np.int32(n), np.int32(k), dist, idx))
    else:
        mods["knn"].get_function("knn_select")((m,), (256,), (q, r, np.int32(n), np.int32(k), dist, idx))
    return dist, idx


def group_gpu(cp, mods, r, q, k: int):
    _, idx = knn_gpu(cp, mods, q, r, k)
    g = len(q)
    patches = cp.full((g, k, 3), cp.nan, cp.float32)
    mods["knn"].get_function("gather_patches")((-(-3 * g * k // 256),), (256,), (r, q, idx, np.int32(g),
                                                                               np.int32(k), patches))
    return patches


def grid_knn_gpu(cp, mods, q, r, r_host: np.ndarray, k: int):
    """The per-frame grid as CudaOps builds it (count, scan, scatter) and its ring search."""
    m, n = len(q), len(r)
    frame_host, (nx, ny, nz) = frame_grid(r_host)
    frame, cells = cp.asarray(frame_host), nx * ny * nz
    g = mods["grid"]
    cell_of, counts = cp.empty(n, cp.int32), cp.zeros(cells, cp.uint32)
    g.get_function("grid_count")((-(-n // KNN_TILE),), (KNN_TILE,), (r, np.int32(n), frame, np.int32(nx), np.int32(ny),
                                                                      np.int32(nz), cell_of, counts))
    starts = cp.concatenate([cp.zeros(1, cp.uint32), cp.cumsum(counts, dtype=cp.uint32)])
    cursor, order = cp.zeros(cells, cp.uint32), cp.empty(n, cp.int32)
    g.get_function("grid_scatter")((-(-n // KNN_TILE),), (KNN_TILE,), (cell_of, np.int32(n), starts, cursor, order))
    dist, idx = cp.full((m, k), cp.nan, cp.float32), cp.full((m, k), -1, cp.int32)
    g.get_function("grid_knn")((-(-m // KNN_TILE),), (KNN_TILE,), (q, np.int32(m), r, frame, np.int32(nx),
                                                                    np.int32(ny), np.int32(nz), starts, order,
                                                                    np.int32(k), dist, idx))
    return dist, idx


def grid_nearest_gpu(cp, mods, grid: ops.NearestGrid, dev: dict, pts):
    n = len(pts)
    out = cp.empty(n, cp.int64)
    bx, by, bz = grid.blocks.shape
    mods["grid"].get_function("grid_nearest")((-(-n // KNN_TILE),), (KNN_TILE,), (
        pts, np.int32(n), dev["frame"], np.int32(bx), np.int32(by), np.int32(bz), dev["blocks"], dev["cells"],
        dev["candidates"], np.int32(grid.candidates.shape[1]), dev["overflow"], dev["ref"], out))
    return out


def grid_rows(cp, mods, scale: int) -> list:
    """The per-frame grid kNN and the template's grid lookup, against edgead.ops (exact) and knn_small (time)."""
    rows = []
    for kind, m, n, k in [("shape", 400_000, 4096, 3), ("shape", 48_000, 4096, 3), ("shape", 4096, 4096, 16),
                          ("shape", 16384, 16384, 16), ("random", 50_000, 8192, 8), ("grid", 3000, 20000, 16)]:
        m, n = max(m // scale, 64), max(n // scale, 2 * k)
        q_host = cloud(kind, m, 1) + (np.float32(0.5) if kind == "grid" else np.float32(0))
        r_host = cloud(kind, n, 2)
        r_host[5] = r_host[9]  # a duplicate: tied neighbours, ordered by index
        want = ops.knn(q_host, r_host, k)
        what = f"grid_knn k={k} {kind} m={m} n={n} (build + query)"
        if not cp:
            rows += [(what, None, None), ("  knn_small, same", None, None)]
            continue
        q, r = cp.asarray(q_host), cp.asarray(r_host)
        d, i = grid_knn_gpu(cp, mods, q, r, r_host, k)
        ok = bool(np.array_equal(cp.asnumpy(i), want.idx) and np.array_equal(cp.asnumpy(d), want.dist))
        rows.append((what, ok, timed(cp, lambda: grid_knn_gpu(cp, mods, q, r, r_host, k))))  # noqa: B023
        rows.append(("  knn_small, same", True, timed(cp, lambda: knn_gpu(cp, mods, q, r, k))))  # noqa: B023
    ref = cloud("shape", 100_000 // scale, 3) * np.float32(40.0)  # a template reference in mm
    grid = ops.reference_grid(ref)
    dev = None
    if cp:
        frame = np.r_[grid.origin, np.float32(1.0 / grid.cell)].astype(np.float32)
        dev = {"frame": cp.asarray(frame), "blocks": cp.asarray(grid.blocks), "cells": cp.asarray(grid.cells),
               "candidates": cp.asarray(grid.candidates), "overflow": cp.asarray(grid.overflow),
               "ref": cp.asarray(ref)}
    for noise in (0.0, 0.05, 1.0):
        n = 400_000 // scale
        pts_host = (cloud("shape", n, 4) * np.float32(40.0)
                    + np.random.default_rng(5).normal(scale=noise, size=(n, 3))).astype(np.float32)
        want = ops.grid_nearest(grid, ref, pts_host)
        what = (f"grid_nearest {n} pts, noise {noise} mm, {100 * (want < 0).mean():.1f}% to the tree "
                f"(grid {grid.nbytes / 2**20:.0f} MB)")
        if not cp:
            rows.append((what, None, None))
            continue
        pts = cp.asarray(pts_host)
        got = cp.asnumpy(grid_nearest_gpu(cp, mods, grid, dev, pts))
        rows.append((what, bool(np.array_equal(got, want)),
                     timed(cp, lambda: grid_nearest_gpu(cp, mods, grid, dev, pts))))  # noqa: B023
    return rows


def cloud(kind: str, n: int, seed: int) -> np.ndarray:
    """random: uniform in the unit cube; shape: a noisy ellipsoid shell with a flat cut (many near-equal
    distances); grid: a 1-unit lattice with its first points repeated (exact ties everywhere)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((n, 3)).astype(np.float32)
    if kind == "grid":
        side = int(np.ceil((0.9 * n / 4) ** 0.5))
        g = np.stack(np.meshgrid(np.arange(side), np.arange(side), np.arange(4)), -1).reshape(-1, 3)[: n - n // 10]
        return np.r_[g, g[: n - len(g)]].astype(np.float32)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p[:, 2] = np.maximum(p[:, 2], -0.3)
    return (p * [1.0, 0.6, 0.4] + rng.normal(scale=0.003, size=(n, 3))).astype(np.float32)


FPS_CASES = [("random", 16384, 512), ("shape", 16384, 512), ("shape", 65536, 2048), ("random", 400_000, 8192),
             ("grid", 20000, 256)]
KNN_CASES = [("random", 400_000, 4096, 3), ("shape", 400_000, 4096, 3), ("shape", 512, 16384, 32),
             ("shape", 256, 16384, 17), ("random", 8192, 65536, 512), ("shape", 2048, 16384, 1),
             ("grid", 3000, 20000, 16), ("grid", 300, 20000, 100)]


def run(dry: bool) -> tuple[list, dict]:
    """(rows (what, exact: bool | None, median ms | None), report). None: not run (dry run or no GPU)."""
    cp = None
    if not dry:
        import cupy as cp
    scale = 64 if dry else 1  # dry: every size divided, so the CPU references stay instant
    mods = compile_modules(cp) if cp else {}
    rows, report = [], {}
    if cp:
        report.update(device=cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
                      sms=cp.cuda.Device(0).attributes["MultiProcessorCount"])
    for kind, n, m in FPS_CASES:
        n, m = max(n // scale, 16), max(m // scale, 2)
        host = cloud(kind, n, n)
        host[7] = host[11]  # a duplicate point
        ref = ops.farthest_point_sample(host, m, 3)
        variants = [("step x2SM", False, 2), ("step x4SM", False, 4), ("persistent", True, 1)]
        for variant, persistent, per_sm in variants:
            what = f"fps {variant} {kind} n={n} m={m}"
            if not cp:
                rows.append((what, None, None))
                continue
            pts, blocks = cp.asarray(host), per_sm * report["sms"]
            got = cp.asnumpy(fps_gpu(cp, mods, pts, m, 3, persistent, blocks))
            ms = timed(cp, lambda: fps_gpu(cp, mods, pts, m, 3, persistent, blocks), repeat=5)  # noqa: B023
            rows.append((what, bool(np.array_equal(got, ref)), ms))
    for kind, m, n, k in KNN_CASES:
        m, n = max(m // scale, 8), max(n // scale, 2 * k)
        q_host = cloud(kind, m, 1) + (np.float32(0.5) if kind == "grid" else np.float32(0))
        r_host = cloud(kind, n, 2)
        ref = ops.knn(q_host, r_host, k)
        what = f"knn k={k} {kind} m={m} n={n}"
        if not cp:
            rows += [(what, None, None)] + ([(f"group k={k} {kind} G={m} n={n}", None, None)] if k > 1 else [])
            continue
        q, r = cp.asarray(q_host), cp.asarray(r_host)
        d, i = knn_gpu(cp, mods, q, r, k)
        exact = np.array_equal(cp.asnumpy(i).astype(np.int64), ref.idx) and np.array_equal(cp.asnumpy(d), ref.dist)
        report[f"{what} index mismatches"] = int((cp.asnumpy(i).astype(np.int64) != ref.idx).sum())
        rows.append((what, bool(exact), timed(cp, lambda: knn_gpu(cp, mods, q, r, k))))  # noqa: B023
        if k > 1:
            patches = cp.asnumpy(group_gpu(cp, mods, r, q, k))
            rows.append((f"group k={k} {kind} G={m} n={n}", bool(np.array_equal(patches, ops.group(r_host, q_host,
                         k).patches)), timed(cp, lambda: group_gpu(cp, mods, r, q, k))))  # noqa: B023
    rows += grid_rows(cp, mods, scale)
    rows += torch_graph_rows(cp, dry)
    return rows, report


def torch_graph_rows(cp, dry: bool) -> list:
    """PyTorch eager inference graphs (random weights: timing only) of each preset on the GPU."""
    import torch

    from edgead.models import dusnet as dus_model
    from edgead.models import r3dad as r3_model
    from edgead.train import dusnet as dus_train
    from edgead.train import r3dad as r3_train

    rows = []
    for name, s in dus_train.PRESETS.items():
        for half in (False, True):
            what = f"torch eager dusnet {name} {'fp16' if half else 'fp32'}"
            if not cp:
                rows.append((what, None, None))
                continue
            graph = dus_model.DusNet(s.arch, s.pipeline.groups).eval().cuda()
            feeds = (torch.rand(s.pipeline.groups, s.pipeline.group_size, 3, device="cuda"),
                     torch.rand(s.pipeline.groups, 3, device="cuda"))
            if half:
                graph, feeds = graph.half(), tuple(f.half() for f in feeds)
            rows.append(torch_row(cp, what, graph, feeds))
    for name, s in r3_train.PRESETS.items():
        what = f"torch eager r3dad {name} fp32"
        if not cp:
            rows.append((what, None, None))
            continue
        graph = r3_model.InferenceGraph(r3_model.R3DAD(s.arch), s.pipeline.num_points).eval().cuda()
        rows.append(torch_row(cp, what, graph, (torch.rand(s.pipeline.num_points, 3, device="cuda"),)))
    return rows


def torch_row(cp, what, graph, feeds):
    import torch

    with torch.inference_mode():
        ms = timed(cp, lambda: graph(*feeds), repeat=10)
    return what, True, ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="no GPU: tiny sizes, CPU references, GPU rows skipped")
    args = ap.parse_args()
    rows, report = run(args.dry_run)
    report["rows"] = [{"what": w, "exact": ok, "median_ms": ms, "status": "skipped" if ms is None else "ran"}
                      for w, ok, ms in rows]
    report["all_exact"] = all(ok is not False for _, ok, _ in rows)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_kernels.json").write_text(json.dumps(report, indent=2))
    print(f"{'what':60s} {'exact':>7s} {'median ms':>10s}")
    for w, ok, ms in rows:
        print(f"{w:60s} {'-' if ok is None else str(ok):>7s} {'skipped' if ms is None else f'{ms:10.3f}':>10s}")
    return 0 if report["all_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
