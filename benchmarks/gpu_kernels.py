"""Check and time the CUDA grouping kernels on a GPU machine (CuPy + nvcc + torch there; no pycuda, no TensorRT).

Compiles edgead/kernels/*.cu exactly as `edgead export` does (--fmad=false), runs them through CuPy's RawModule on
random and real-shaped clouds, checks exact equality with edgead.ops (same FPS indices, same neighbours, same
patches, same grid answers), and times them with CUDA events (median of repeats): FPS launched per step vs the
persistent single-launch variant, knn_small (NN scoring) and knn_select (grouping), the per-frame grid (grid_count,
scan, grid_scatter, grid_knn) against knn_small, and grid_nearest (the template's lookup in a fixed reference's
NearestGrid) against edgead.ops.grid_nearest. Then times the PyTorch eager inference graphs of the cpu and paper
presets on the GPU. Prints a table last; writes everything to $OUT/gpu_kernels.json when OUT is set.

edgead.ops needs pykdtree and fpsample: carry their wheels (see /work/.library/device/README.md) if absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cupy as cp  # noqa: E402

from edgead import ops  # noqa: E402
from edgead.export import KERNEL_SOURCES, NVCC_FLAGS  # noqa: E402
from edgead.runtime.cuda_ops import frame_grid  # noqa: E402

FPS_THREADS, KNN_TILE, KNN_SMALL_MAX = 256, 256, 16


def compile_modules() -> dict[str, cp.RawModule]:
    arch = f"sm_{cp.cuda.Device(0).compute_capability}"  # e.g. "90"
    out = Path(tempfile.mkdtemp())
    mods = {}
    for cu in sorted(KERNEL_SOURCES.glob("*.cu")):
        cubin = out / f"{cu.stem}.cubin"
        subprocess.run(["nvcc", *NVCC_FLAGS, "-Xptxas", "-v", "-cubin", f"-arch={arch}", "-o", str(cubin), str(cu)],
                       check=True)
        mods[cu.stem] = cp.RawModule(path=str(cubin))
    return mods


def timed(fn, repeat: int = 20) -> float:
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


def fps_gpu(mods, pts: cp.ndarray, m: int, start: int, persistent: bool, blocks: int) -> cp.ndarray:
    n = len(pts)
    nb = max(1, min(blocks, -(-n // FPS_THREADS)))
    dist = cp.empty(n, cp.float32)
    pval, pidx = cp.empty(2 * nb, cp.float32), cp.empty(2 * nb, cp.int32)
    out = cp.full(m, -1, cp.int64)
    f = mods["fps"]
    if persistent:
        sync = cp.zeros(2, cp.uint32)
        f.get_function("fps_persistent")((nb,), (FPS_THREADS,), (pts, np.int32(n), dist, pval, pidx, out,
                                                                    np.int32(m), np.int32(start), sync))
    else:
        step = f.get_function("fps_step")
        for j in range(1, m):
            step((nb,), (FPS_THREADS,), (pts, np.int32(n), dist, pval, pidx, out, np.int32(j), np.int32(start)))
        if m > 1:
            f.get_function("fps_finish")((1,), (FPS_THREADS,), (pval, pidx, np.int32(nb), out, np.int32(m)))
    out[0] = start
    return out


def knn_gpu(mods, q: cp.ndarray, r: cp.ndarray, k: int):
    m, n = len(q), len(r)
    dist, idx = cp.full((m, k), cp.nan, cp.float32), cp.full((m, k), -1, cp.int32)
    if k <= KNN_SMALL_MAX:
        mods["knn"].get_function("knn_small")((-(-m // KNN_TILE),), (KNN_TILE,),
                                              (q, np.int32(m), r, np.int32(n), np.int32(k), dist, idx))
    else:
        mods["knn"].get_function("knn_select")((m,), (256,), (q, r, np.int32(n), np.int32(k), dist, idx))
    return dist, idx


def group_gpu(mods, r, q, k):
    _, idx = knn_gpu(mods, q, r, k)
    g = len(q)
    patches = cp.full((g, k, 3), cp.nan, cp.float32)
    mods["knn"].get_function("gather_patches")((-(-3 * g * k // 256),), (256,), (r, q, idx, np.int32(g),
                                                                               np.int32(k), patches))
    return patches


def grid_knn_gpu(mods, q: cp.ndarray, r: cp.ndarray, r_host: np.ndarray, k: int):
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


def grid_nearest_gpu(mods, grid: ops.NearestGrid, dev: dict, pts: cp.ndarray) -> cp.ndarray:
    n = len(pts)
    out = cp.empty(n, cp.int64)
    bx, by, bz = grid.blocks.shape
    mods["grid"].get_function("grid_nearest")((-(-n // KNN_TILE),), (KNN_TILE,), (
        pts, np.int32(n), dev["frame"], np.int32(bx), np.int32(by), np.int32(bz), dev["blocks"], dev["cells"],
        dev["candidates"], np.int32(grid.candidates.shape[1]), dev["overflow"], dev["ref"], out))
    return out


def grid_rows(mods) -> list:
    """The per-frame grid kNN and the template's grid lookup, against edgead.ops (exact) and knn_small (time)."""
    rows = []
    for kind, m, n, k in [("shape", 400_000, 4096, 3), ("shape", 48_000, 4096, 3), ("shape", 4096, 4096, 16),
                          ("shape", 16384, 16384, 16), ("random", 50_000, 8192, 8)]:
        q_host = shape_cloud(m, 1) if kind == "shape" else np.random.default_rng(1).random((m, 3)).astype(np.float32)
        r_host = shape_cloud(n, 2) if kind == "shape" else np.random.default_rng(2).random((n, 3)).astype(np.float32)
        r_host[5] = r_host[9]  # a duplicate: tied neighbours, ordered by index
        q, r = cp.asarray(q_host), cp.asarray(r_host)
        want = ops.knn(q_host, r_host, k)
        d, i = grid_knn_gpu(mods, q, r, r_host, k)
        ok = bool(np.array_equal(cp.asnumpy(i), want.idx) and np.array_equal(cp.asnumpy(d), want.dist))
        rows.append((f"grid_knn k={k} {kind} m={m} n={n} (build + query)", ok,
                     timed(lambda: grid_knn_gpu(mods, q, r, r_host, k))))  # noqa: B023
        rows.append(("  knn_small, same", True, timed(lambda: knn_gpu(mods, q, r, k))))  # noqa: B023
    ref = shape_cloud(100_000, 3) * np.float32(40.0)  # a template reference in mm
    grid = ops.reference_grid(ref)
    frame = np.r_[grid.origin, np.float32(1.0 / grid.cell)].astype(np.float32)
    dev = {"frame": cp.asarray(frame), "blocks": cp.asarray(grid.blocks), "cells": cp.asarray(grid.cells),
           "candidates": cp.asarray(grid.candidates), "overflow": cp.asarray(grid.overflow), "ref": cp.asarray(ref)}
    for noise in (0.0, 0.05, 1.0):
        pts_host = (shape_cloud(400_000, 4) * np.float32(40.0)
                    + np.random.default_rng(5).normal(scale=noise, size=(400_000, 3))).astype(np.float32)
        pts = cp.asarray(pts_host)
        got = cp.asnumpy(grid_nearest_gpu(mods, grid, dev, pts))
        want = ops.grid_nearest(grid, ref, pts_host)
        rows.append((f"grid_nearest 400k pts, noise {noise} mm, {100 * (want < 0).mean():.1f}% to the tree "
                     f"(grid {grid.nbytes / 2**20:.0f} MB)", bool(np.array_equal(got, want)),
                     timed(lambda: grid_nearest_gpu(mods, grid, dev, pts))))  # noqa: B023
    return rows


def shape_cloud(n: int, seed: int) -> np.ndarray:
    """A real-shaped frame: noisy ellipsoid shell with a flat cut (many near-equal distances), normalised units."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    p[:, 2] = np.maximum(p[:, 2], -0.3)
    return (p * [1.0, 0.6, 0.4] + rng.normal(scale=0.003, size=(n, 3))).astype(np.float32)


def main() -> None:
    mods = compile_modules()
    sms = cp.cuda.Device(0).attributes["MultiProcessorCount"]
    rows, report = [], {"device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(), "sms": sms}
    for kind, n, m in [("random", 16384, 512), ("shape", 16384, 512), ("shape", 65536, 2048),
                       ("random", 400_000, 8192)]:
        host = (np.random.default_rng(n).random((n, 3)).astype(np.float32) if kind == "random"
                else shape_cloud(n, n))
        host[7] = host[11]  # a duplicate point
        pts = cp.asarray(host)
        ref = ops.farthest_point_sample(host, m, 3)
        for variant, persistent, blocks in [("step x2SM", False, 2 * sms), ("step x4SM", False, 4 * sms),
                                            ("persistent", True, sms)]:
            got = cp.asnumpy(fps_gpu(mods, pts, m, 3, persistent, blocks))
            ok = bool(np.array_equal(got, ref))
            ms = timed(lambda: fps_gpu(mods, pts, m, 3, persistent, blocks), repeat=5)  # noqa: B023
            rows.append((f"fps {variant} {kind} n={n} m={m}", ok, ms))
    for kind, m, n, k in [("random", 400_000, 4096, 3), ("shape", 400_000, 4096, 3), ("shape", 512, 16384, 32),
                          ("random", 8192, 65536, 512), ("shape", 2048, 16384, 1)]:
        q_host = np.random.default_rng(1).random((m, 3)).astype(np.float32) if kind == "random" \
            else shape_cloud(m, 1)
        r_host = np.random.default_rng(2).random((n, 3)).astype(np.float32) if kind == "random" \
            else shape_cloud(n, 2)
        q, r = cp.asarray(q_host), cp.asarray(r_host)
        d_ref, i_ref = ops.knn(q_host, r_host, k)
        d, i = knn_gpu(mods, q, r, k)
        same_idx = cp.asnumpy(i).astype(np.int64)
        mismatch = same_idx != i_ref
        # where indices differ the distances must tie exactly (equidistant points), else it is a bug
        ok = bool(np.array_equal(cp.asnumpy(d)[mismatch], d_ref[mismatch]) and mismatch.mean() < 1e-4)
        report[f"knn {kind} m={m} n={n} k={k} index mismatches"] = int(mismatch.sum())
        report[f"knn {kind} m={m} n={n} k={k} max rel dist diff"] = float(
            np.max(np.abs(cp.asnumpy(d) - d_ref) / np.maximum(d_ref, 1e-30)))
        rows.append((f"knn k={k} {kind} m={m} n={n}", ok, timed(lambda: knn_gpu(mods, q, r, k))))  # noqa: B023
        if k > 1 and m <= 8192:
            patches = cp.asnumpy(group_gpu(mods, r, q, k))
            rows.append((f"group k={k} {kind} G={m} n={n}", bool(np.array_equal(patches, ops.group(r_host, q_host,
                         k)[0])), timed(lambda: group_gpu(mods, r, q, k))))  # noqa: B023
    rows += grid_rows(mods)
    rows += torch_graph_rows()
    report["rows"] = [{"what": w, "exact": ok, "median_ms": ms} for w, ok, ms in rows]
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_kernels.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
    print(f"{'what':60s} {'exact':>6s} {'median ms':>10s}")
    for w, ok, ms in rows:
        print(f"{w:60s} {str(ok):>6s} {ms:10.3f}")


def torch_graph_rows() -> list:
    """PyTorch eager inference graphs (random weights: timing only) of each preset on the GPU."""
    import torch

    from edgead.models import dusnet as dus_model
    from edgead.models import r3dad as r3_model
    from edgead.train import dusnet, r3dad

    rows = []
    for name, preset in dusnet.PRESETS.items():
        cfg = preset.pipeline
        graph = dus_model.DusNet(preset.arch, cfg.groups).eval().cuda()
        feeds = (torch.rand(cfg.groups, cfg.group_size, 3, device="cuda"), torch.rand(cfg.groups, 3, device="cuda"))
        rows.append(torch_row(f"torch eager dusnet {name} fp32", graph, feeds))
        rows.append(torch_row(f"torch eager dusnet {name} fp16", graph.half(), tuple(f.half() for f in feeds)))
    for name, preset in r3dad.PRESETS.items():
        graph = r3_model.InferenceGraph(r3_model.R3DAD(preset.arch), preset.pipeline.num_points).eval().cuda()
        rows.append(torch_row(f"torch eager r3dad {name} fp32", graph,
                              (torch.rand(preset.pipeline.num_points, 3, device="cuda"),)))
    return rows


def torch_row(what, graph, feeds):
    import torch

    with torch.inference_mode():
        ms = timed(lambda: graph(*feeds), repeat=10)
    return what, True, ms


if __name__ == "__main__":
    main()
