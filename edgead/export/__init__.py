"""``edgead export RUN_DIR --out engines/ [--name NAME] [--format onnx|trt|all]``: engines an edge box runs without
PyTorch.

Writes ``NAME.onnx`` (FP32), ``NAME.fp16.onnx`` (FP16 weights and arithmetic, FP32 inputs/outputs: the source of
TensorRT 11 FP16 plans and of the FP16 numerics check), ``NAME.plan`` (TensorRT FP16, where TensorRT and a GPU are
present), the compiled grouping kernels (where nvcc is present), ``NAME.npz`` (pipeline arrays) and the manifest
``NAME.json`` (see :mod:`edgead.export.manifest`). Files are built in a temporary folder and renamed into place, the
manifest last, so a failed export leaves no half-written engine that a backend would accept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgead.export.manifest import sha256, write_manifest

FORMATS = ("onnx", "trt", "all")
KERNEL_SOURCES = Path(__file__).resolve().parent.parent / "kernels"
NVCC_FLAGS = ["--fmad=false", "-O3", "-Werror", "all-warnings"]  # --fmad=false: bit-exact with edgead.ops


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory written by `edgead train` (dusnet or r3dad)")
    p.add_argument("--out", type=Path, default=Path("engines"), help="output folder (default: engines/)")
    p.add_argument("--name", help="engine name (default: the detector kind)")
    p.add_argument("--format", choices=FORMATS, default="all",
                   help="onnx; trt (fails without TensorRT and a GPU); all (default: onnx, plus trt where possible)")
    p.add_argument("--frame", type=Path,
                   help="point cloud for the parity check (default: the run's stored reference shape)")
    p.add_argument("--score-voxel", type=float, metavar="SIZE",
                   help="score one point per voxel of this edge (normalised units) and spread it over the voxel; "
                        "0: score every point (default: the run's, 0.015 in the cpu presets; docs/performance.md)")


def main(args: argparse.Namespace) -> int:
    doc = export_run(args.run_dir, args.out, args.name, args.format, args.frame, args.score_voxel)
    for key, figures in doc["parity"].items():
        print(f"parity {key}: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    if doc.get("trt_skipped"):
        print(f"no TensorRT plan: {doc['trt_skipped']}")
    print(f"wrote {', '.join(sorted(doc['files']))} to {args.out}")
    return 0


def export_run(run_dir: Path, out: Path, name: str | None = None, fmt: str = "all", frame: Path | None = None,
               score_voxel: float | None = None) -> dict:
    """Export a run directory; returns the manifest written to ``out/NAME.json``."""
    from edgead.detectors import load_pipeline
    from edgead.export import onnx as onnx_export
    from edgead.export import trt
    from edgead.models import load_graph
    from edgead.runtime import RUN_JSON, RUN_NPZ
    from edgead.runtime.torch_backend import load_runner

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    if not (run_dir / RUN_JSON).exists():
        raise FileNotFoundError(f"{run_dir}: no {RUN_JSON}; not a run directory written by `edgead train`")
    pipeline, doc = load_pipeline(run_dir / RUN_JSON, run_dir / RUN_NPZ)
    if pipeline.kind == "template":
        raise ValueError(f"{run_dir}: a template detector has no network to export; load the run directory itself")
    if score_voxel is not None:
        if not score_voxel >= 0:
            raise ValueError(f"--score-voxel must be >= 0 (0: score every point), got {score_voxel}")
        pipeline.config = replace(pipeline.config, score_voxel=score_voxel)
    trt_reason = trt.unavailable_reason()
    if fmt == "trt" and trt_reason:
        raise RuntimeError(f"cannot build a TensorRT plan: {trt_reason}")
    name = name or pipeline.kind
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"engine name {name!r}: use letters, digits, '-' and '_' only")
    meta, arrays = pipeline.state()
    points = parity_frame(frame, meta, arrays)
    feeds, context = pipeline.preprocess(points)
    graph = load_graph(run_dir, doc)
    torch_runner = load_runner(run_dir, doc)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}.") as tmp_dir:
        tmp = Path(tmp_dir)
        files = {f"{name}.onnx": False, f"{name}.fp16.onnx": True}
        for fname, half in files.items():
            onnx_export.export(graph, feeds, tmp / fname, half=half)
            problems = onnx_export.check_graph(tmp / fname)
            if problems:
                raise RuntimeError(f"{fname}: graph not fit for TensorRT: " + "; ".join(problems))
        np.savez(tmp / f"{name}.npz", **arrays)

        from edgead.runtime import onnx_backend

        reference = torch_runner(feeds)
        ref_scores = pipeline.postprocess(points, context, reference)
        parity = {}
        for fname, key in ((f"{name}.onnx", "onnx_fp32_vs_torch"), (f"{name}.fp16.onnx", "onnx_fp16_vs_torch")):
            runner = onnx_backend.make_runner(onnx_backend.session(tmp / fname))
            parity[key] = compare(reference, ref_scores, runner(feeds), pipeline, points, context)

        manifest = {
            "name": name, "kind": pipeline.kind, "preset": doc.get("preset", meta.get("preset")),
            "model_hash": doc.get("model_hash", ""), "threshold": doc.get("threshold"), "source_run": str(run_dir),
            "pipeline": meta, "normalization": meta.get("normalization"),
            "inputs": [tensor_spec(n, feeds[n]) for n in graph.input_names],
            "outputs": [tensor_spec(n, reference[n]) for n in graph.output_names],
            "engines": {"onnx": {"file": f"{name}.onnx", "precision": "fp32"},
                        "onnx_fp16": {"file": f"{name}.fp16.onnx", "precision": "fp16 (fp32 inputs/outputs)"}},
            "versions": versions(), "parity": parity,
            "parity_frame": str(frame) if frame else "run reference (normalised training shape, sensor units)",
        }
        kernels = compile_kernels(tmp)
        if kernels:
            manifest["kernels"] = kernels
        if fmt != "onnx" and not trt_reason:
            info = trt.build(tmp / f"{name}.onnx", tmp / f"{name}.fp16.onnx", tmp / f"{name}.plan",
                             out / "timing.cache")
            manifest["engines"]["plan"] = {"file": f"{name}.plan", **info}
        elif fmt != "onnx":
            manifest["trt_skipped"] = trt_reason
        produced = sorted(p.name for p in tmp.iterdir())
        manifest["files"] = {f: sha256(tmp / f) for f in produced}
        for f in produced:
            os.replace(tmp / f, out / f)
    write_manifest(out / f"{name}.json", manifest)
    return json.loads((out / f"{name}.json").read_text())


def parity_frame(frame: Path | None, meta: dict, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 3) float32 sensor-unit frame for the export-time parity check."""
    if frame is not None:
        from edgead.io import read_points

        pts = read_points(frame)
        return np.asarray(pts[0] if isinstance(pts, tuple) else pts, dtype=np.float32)  # (points, labels) formats
    ref = arrays.get("reference")
    if ref is None or len(ref) < 64:
        raise ValueError("this run stores no reference shape to check parity on; pass --frame SCAN")
    scale = float(meta["normalization"]["scale"])
    return (ref.astype(np.float64) * scale + 100.0).astype(np.float32)  # an arbitrary offset, as sensors give


def compare(ref_out: dict, ref_scores: np.ndarray, outputs: dict, pipeline, points, context) -> dict[str, float]:
    """Max/mean absolute differences of the network outputs and of the point scores (sensor units)."""
    scores = pipeline.postprocess(points, context, outputs)
    figures = {}
    for key, value in ref_out.items():
        diff = np.abs(outputs[key].astype(np.float64) - value.astype(np.float64))
        figures[f"{key}_max_abs"], figures[f"{key}_mean_abs"] = float(diff.max()), float(diff.mean())
    diff = np.abs(scores.astype(np.float64) - ref_scores.astype(np.float64))
    figures["score_max_abs"], figures["score_mean_abs"] = float(diff.max()), float(diff.mean())
    figures["score_max_ref"] = float(ref_scores.max())
    return figures


def tensor_spec(name: str, value: np.ndarray) -> dict:
    return {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for pkg in ("edgead", "numpy", "torch", "onnx", "onnxruntime", "tensorrt", "pycuda"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    nvcc = shutil.which("nvcc")
    if nvcc:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip()
        found["nvcc"] = text.splitlines()[-1] if text else "unknown"
    return found


def compile_kernels(out: Path) -> dict | None:
    """Compile every grouping kernel to PTX (JIT-compiled forward by the driver on any GPU from sm_75), plus a cubin
    for the local GPU where there is one. None without nvcc."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    from edgead.export.trt import gpu_arch

    arch = gpu_arch()
    compiled = {}
    for cu in sorted(KERNEL_SOURCES.glob("*.cu")):
        targets = {f"edgead_{cu.stem}.ptx": ["-ptx", "-arch=compute_75"]}
        if arch:
            targets[f"edgead_{cu.stem}.{arch}.cubin"] = ["-cubin", f"-arch={arch}"]
        for fname, target in targets.items():
            proc = subprocess.run([nvcc, *NVCC_FLAGS, *target, "-o", str(out / fname), str(cu)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"nvcc failed on {cu.name}: {proc.stderr.strip()}")
        compiled[cu.stem] = sorted(targets)
    return {"modules": compiled, "gpu_arch": arch, "flags": NVCC_FLAGS}
