"""Per-stage latency of an engine (any detector: ``template`` run directories too), interleaved frame by frame with
the plain k-d tree pass over the same frame, and of the PyTorch eager reference of the same detector and preset,
measured in the same run (``edgead bench``).

The plain k-d tree pass is the least a naive golden sample does per frame, and the yardstick on a shared machine:
scipy's ``cKDTree`` built over the union of the training scans (aligned to the first, as the template trainer
does; ``--data``), or over the detector's stored reference in sensor units without it, and queried with the
frame's every point (2 workers). Timed just before each detection, so both see the same load.

The eager reference is the whole detector written the straightforward way research code does it: the same trained
network in PyTorch eager mode, and geometry (FPS, KNN grouping, nearest-neighbour scoring) as brute-force torch
(a Python loop of tensor ops for FPS, ``torch.cdist`` + ``topk`` for neighbours) instead of the runtime's exact
compiled FPS and k-d trees, and every point scored as the papers do (``score_voxel=0``) instead of one point per
voxel. Normalisation and ICP alignment are the same numpy code in both. The figure for the plain run-directory
backend (torch network, numpy geometry, the engine's own scoring) is printed too, so the network's share is visible.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from edgead import ops
from edgead.detectors.template import TemplateConfig, align_to_first
from edgead.formats.dataset import load_train
from edgead.formats.engine import manifest_path
from edgead.formats.rundir import is_run_dir
from edgead.ops import Groups, Neighbours
from edgead.runtime import EdgeDetector

STAGES = ("preprocess", "network", "postprocess", "total")
KD_WORKERS = 2  # the plain pass's threads: the 2 cores the line-rate targets are set on


def run(engine: Path, points: int = 400_000, frames: int = 50, reference: Path | None = None,
        reference_frames: int = 5, threads: int | None = None, device: str = "cpu", data: Path | None = None,
        progress: bool = False) -> dict:
    if points < 1 or frames < 1:
        raise ValueError("--points and --frames must be positive")
    if threads:
        os.environ["EDGEAD_THREADS"] = str(threads)
    engine = Path(engine)
    det = EdgeDetector.load(engine, device=device)
    frame = make_frame(det.pipeline, points)
    union, source = kd_union(det.pipeline, data)
    kd_pass = plain_kd_pass(union, frame)
    stats, kd = measure(det, frame, frames, kd_pass=kd_pass, bar="engine" if progress else None)
    report = {"engine": str(engine), "backend": det.backend, "kind": det.pipeline.kind, "points": points,
              "frames": frames, "engine_stats": stats, "peak_rss_mb_engine": peak_rss_mb(),
              "kd_pass_stats": kd, "kd_union_points": len(union), "kd_union": source,
              "ratio_to_kd_pass": stats["total"]["median"] / kd["median"],
              "state_mb": state_megabytes(det.pipeline), "load_average": os.getloadavg()}
    if reference is None and not engine.is_dir():
        reference = Path(json.loads(manifest_path(engine).read_text()).get("source_run", ""))
    if reference is not None and is_run_dir(reference):
        import torch  # the eager references only: the engine itself was measured without it

        if threads:
            torch.set_num_threads(threads)
        plain = EdgeDetector.load(reference, device=device)
        report["torch_numpy_geometry_stats"] = measure(plain, frame, reference_frames,
                                                       bar="torch + numpy geometry" if progress else None)[0]
        eager = EdgeDetector.load(reference, device=device)
        eager.pipeline.geometry = TorchEagerOps(device)
        eager.pipeline.config = replace(eager.pipeline.config, score_voxel=0.0)  # every point, as the papers do
        report["torch_eager_stats"] = measure(eager, frame, reference_frames,
                                              bar="torch eager" if progress else None)[0]
        report["peak_rss_mb_process"] = peak_rss_mb()
        report["reference"] = str(reference)
        for key in ("torch_eager", "torch_numpy_geometry"):
            report[f"speedup_vs_{key}"] = report[f"{key}_stats"]["total"]["median"] / \
                report["engine_stats"]["total"]["median"]
    return report


def make_frame(pipeline, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) float32 mm: the pipeline's stored reference shape resampled to n points with sensor-like noise."""
    meta, arrays = pipeline.state()
    ref = arrays.get("reference")
    rng = np.random.default_rng(seed)
    if ref is None or len(ref) == 0:
        ref = rng.normal(size=(4096, 3))
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    scale = float(meta.get("normalization", {}).get("scale", 1.0))  # template references are in sensor units
    pick = rng.integers(0, len(ref), n)
    return ((ref[pick] + rng.normal(scale=0.01, size=(n, 3))) * scale + 250.0).astype(np.float32)


def kd_union(pipeline, data: Path | None) -> tuple[np.ndarray, str]:
    """The cloud the plain pass builds its tree on: the training scans of ``data`` aligned to the first and merged,
    else the pipeline's stored reference in sensor units. -> ((U, 3) float32, what it is)."""
    if data is not None:
        return np.concatenate(align_to_first(load_train(data), TemplateConfig())), f"training scans of {data}"
    meta, arrays = pipeline.state()
    scale = float(meta.get("normalization", {}).get("scale", 1.0))
    return (arrays["reference"] * np.float32(scale)).astype(np.float32), "the detector's stored reference"


def plain_kd_pass(union: np.ndarray, frame: np.ndarray) -> Callable[[], None]:
    """One naive golden-sample frame: build a cKDTree over ``union`` and query every point of ``frame`` (moved onto
    it by the bounding-box centres, the pose a fixture gives) for its nearest neighbour."""
    query = frame - ops.bbox_center(frame) + ops.bbox_center(union)
    return lambda: cKDTree(union).query(query, k=1, workers=KD_WORKERS)


def measure(det, frame: np.ndarray, frames: int, warmup: int = 2, kd_pass: Callable[[], None] | None = None,
            bar: str | None = None) -> tuple[dict, dict | None]:
    """Median and p95 per stage (ms) over ``frames`` detections after ``warmup``, and frames per second; with
    ``kd_pass``, that pass runs before each detection and its median and p95 (ms) come back too (else None).
    ``bar``: the name of a progress bar over the frames (none by default)."""
    counter = tqdm(total=warmup + frames, desc=bar, unit="frame", disable=bar is None, leave=False)
    for _ in range(warmup):
        det.detect(frame)
        counter.update()
    gc.collect()
    rows, kd = [], []
    for _ in range(frames):
        if kd_pass is not None:
            t0 = time.perf_counter()
            kd_pass()
            kd.append((time.perf_counter() - t0) * 1e3)
        rows.append(det.detect(frame).timings_ms)
        counter.update()
    counter.close()
    stats = {s: {"median": float(np.median([r[s] for r in rows])),
                 "p95": float(np.percentile([r[s] for r in rows], 95))} for s in STAGES}
    stats["fps"] = 1000.0 / stats["total"]["median"]
    return stats, ({"median": float(np.median(kd)), "p95": float(np.percentile(kd, 95))} if kd else None)


def state_megabytes(pipeline) -> dict[str, float]:
    """The detector's stored arrays (MB): all of them, and its nearest-point grid's share (0 without one)."""
    _, arrays = pipeline.state()
    grid = sum(a.nbytes for k, a in arrays.items() if k.startswith("grid_"))
    return {"total": sum(a.nbytes for a in arrays.values()) / 2**20, "grid": grid / 2**20}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def format_report(r: dict) -> str:
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    lines = [f"{r['engine']} ({r['kind']}, {r['backend']}), {r['points']} points/frame, load average {load}"]
    rows = [("engine", "engine_stats", r["frames"])]
    rows += [("torch eager (brute-force torch geometry, every point scored)", "torch_eager_stats", None),
             ("torch network + numpy geometry", "torch_numpy_geometry_stats", None)]
    for label, key, _ in rows:
        if key not in r:
            continue
        s = r[key]
        stages = "  ".join(f"{st} {s[st]['median']:.1f}/{s[st]['p95']:.1f}" for st in STAGES)
        lines.append(f"  {label}: {stages} ms (median/p95), {s['fps']:.2f} frames/s")
    kd = r["kd_pass_stats"]
    lines.append(f"  plain k-d tree pass (cKDTree over {r['kd_union_points']} points, {r['kd_union']}, build + "
                 f"query, {KD_WORKERS} workers), interleaved: {kd['median']:.1f}/{kd['p95']:.1f} ms; engine / pass "
                 f"= {r['ratio_to_kd_pass']:.3f}")
    lines.append(f"  stored state: {r['state_mb']['total']:.1f} MB (nearest-point grid {r['state_mb']['grid']:.1f} MB)")
    lines.append(f"  peak RSS: engine {r['peak_rss_mb_engine']:.0f} MB"
                 + (f", whole process with the torch references {r['peak_rss_mb_process']:.0f} MB"
                    if "peak_rss_mb_process" in r else ""))
    if "speedup_vs_torch_eager" in r:
        lines.append(f"  speed-up: {r['speedup_vs_torch_eager']:.1f}x vs torch eager, "
                     f"{r['speedup_vs_torch_numpy_geometry']:.2f}x vs torch network + numpy geometry")
    return "\n".join(lines)


class TorchEagerOps:
    """Geometry as typical PyTorch research code writes it (brute force on tensors); edgead.ops signatures."""

    def __init__(self, device: str = "cpu", chunk: int = 8192):
        import torch

        self.torch, self.device, self.chunk = torch, device, chunk

    def _t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def farthest_point_sample(self, points, m, start=0):
        torch = self.torch
        xyz = self._t(points)
        idx = torch.empty(m, dtype=torch.long)
        dist = torch.full((len(xyz),), float("inf"), device=xyz.device)
        far = int(start)
        for i in range(m):
            idx[i] = far
            dist = torch.minimum(dist, ((xyz - xyz[far]) ** 2).sum(-1))
            far = int(torch.argmax(dist))
        return idx.numpy()

    def knn(self, query, ref, k):
        torch = self.torch
        r = self._t(ref)
        ds, ids = [], []
        for q in self._t(query).split(self.chunk):
            d, i = torch.cdist(q, r).topk(k, dim=1, largest=False)
            ds.append(d)
            ids.append(i)
        return Neighbours(torch.cat(ds).cpu().numpy(), torch.cat(ids).cpu().numpy())

    def group(self, points, centers, k):
        idx = self.knn(centers, points, k).idx
        return Groups((points[idx] - centers[:, None, :]).astype(np.float32), idx)

    def nearest_distance(self, query, ref):
        return self.knn(query, ref, 1)[0][:, 0]
