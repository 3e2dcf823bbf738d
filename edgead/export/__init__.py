"""Export a run directory to engines an edge box runs without PyTorch (``edgead export``).

Writes ``NAME.onnx`` (FP32), ``NAME.fp16.onnx`` (FP16 weights and arithmetic, FP32 inputs/outputs: the source of
TensorRT 11 FP16 plans and of the FP16 numerics check), ``NAME.plan`` (TensorRT FP16, where TensorRT and a GPU are
present), the compiled grouping kernels (where nvcc is present), ``NAME.npz`` (pipeline arrays) and the manifest
``NAME.json`` (``edgead.formats.engine``). Files are built in a temporary folder and renamed into place, the
manifest last, so a failed export leaves no half-written engine that a backend would accept. A TensorRT build that
fails does not cost the ONNX engines: the manifest says why there is no plan.

The steps live in ``onnx`` (graph export and checks), ``parity`` (against PyTorch), ``kernels`` (nvcc) and ``trt``.
Imports: torch, ``edgead.models``, ``edgead.runtime`` (the ONNX backend for parity), ``edgead.detectors``,
``edgead.formats``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import replace
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgead.detectors import Kind, build_pipeline
from edgead.export import onnx as onnx_export
from edgead.export import parity, trt
from edgead.export.kernels import compile_kernels
from edgead.formats.digest import sha256_file
from edgead.formats.engine import write_manifest
from edgead.formats.rundir import read_run, save_arrays
from edgead.models import load_graph
from edgead.runtime import onnx_backend, torch_backend


class Format(StrEnum):
    ONNX = "onnx"
    TRT = "trt"  # fails without TensorRT and a GPU
    ALL = "all"  # onnx, plus trt where it can be built


def export_run(run_dir: Path, out: Path, name: str | None = None, fmt: str = "all", frame: Path | None = None,
               score_voxel: float | None = None, progress: bool = False) -> dict:
    """Export a run directory; returns the manifest written to ``out/NAME.json``. ``progress``: a bar (stderr)
    naming each step: the two ONNX exports with their parity checks, the kernels, the TensorRT plan."""
    fmt = Format(fmt)
    run = read_run(run_dir)
    if run.arch is None:
        raise ValueError(f"{run_dir}: a {run.kind} detector has no network to export; load the run directory itself")
    pipeline = build_pipeline(run.kind, run.pipeline, run.arrays)
    if score_voxel is not None:
        if not score_voxel >= 0:
            raise ValueError(f"--score-voxel must be >= 0 (0: score every point), got {score_voxel}")
        pipeline.config = replace(pipeline.config, score_voxel=score_voxel)
    trt_reason = trt.unavailable_reason()
    if fmt is Format.TRT and trt_reason:
        raise RuntimeError(f"cannot build a TensorRT plan: {trt_reason}")
    name = name or run.kind
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"engine name {name!r}: use letters, digits, '-' and '_' only")
    meta, arrays = pipeline.state()
    points = parity.parity_frame(frame, meta, arrays)
    feeds, context, _ = pipeline.preprocess(points)
    graph = load_graph(run)
    reference = torch_backend.load_runner(run)(feeds)
    ref_scores = pipeline.postprocess(points, context, reference)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=3 + (fmt is not Format.ONNX), desc=f"export {name}", unit="step", disable=not progress)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}.") as tmp_dir, steps:
        tmp = Path(tmp_dir)
        checks = {}
        for fname, half, key in ((f"{name}.onnx", False, "onnx_fp32_vs_torch"),
                                 (f"{name}.fp16.onnx", True, "onnx_fp16_vs_torch")):
            steps.set_postfix_str(f"{fname} + parity")
            onnx_export.export(graph, feeds, tmp / fname, half=half)
            problems = onnx_export.check_graph(tmp / fname)
            if problems:
                raise RuntimeError(f"{fname}: graph not fit for TensorRT: " + "; ".join(problems))
            runner = onnx_backend.make_runner(onnx_backend.session(tmp / fname))
            checks[key] = parity.compare(reference, ref_scores, runner(feeds), pipeline, points, context)
            steps.update()
        save_arrays(tmp / f"{name}.npz", arrays)
        manifest = {
            "name": name, "kind": Kind.parse(run.kind).value, "preset": run.doc["train"].get("preset"),
            "source_run": str(run_dir), "source_model_hash": run.model_hash, "pipeline": meta, "arch": run.arch,
            "inputs": [tensor_spec(n, feeds[n]) for n in graph.input_names],
            "outputs": [tensor_spec(n, reference[n]) for n in graph.output_names],
            "engines": {"onnx": {"file": f"{name}.onnx", "precision": "fp32"},
                        "onnx_fp16": {"file": f"{name}.fp16.onnx", "precision": "fp16 (fp32 inputs/outputs)"}},
            "versions": versions(), "parity": checks,
            "parity_frame": str(frame) if frame else "run reference (normalised training shape, sensor units)",
            "fp16_score_tolerance": parity.FP16_SCORE_TOLERANCE,
            "fp16_within_tolerance": not parity.out_of_tolerance(checks["onnx_fp16_vs_torch"]),
        }
        steps.set_postfix_str("CUDA kernels")
        kernels = compile_kernels(tmp)
        steps.update()
        if kernels:
            manifest["kernels"] = kernels
        if fmt is not Format.ONNX:
            steps.set_postfix_str("TensorRT plan")
            plan, skipped = build_plan(tmp, name, out / "timing.cache", trt_reason)
            if plan:
                manifest["engines"]["plan"] = plan
            else:
                manifest["trt_skipped"] = skipped
            steps.update()
        produced = sorted(p.name for p in tmp.iterdir())
        manifest["files"] = {f: sha256_file(tmp / f) for f in produced}
        for f in produced:
            os.replace(tmp / f, out / f)
    return write_manifest(out / f"{name}.json", manifest)


def build_plan(tmp: Path, name: str, timing_cache: Path, reason: str | None) -> tuple[dict | None, str | None]:
    """(the plan's manifest facts, None), or (None, why there is no plan): TensorRT missing, or its build failed."""
    if reason:
        return None, reason
    try:
        info = trt.build(tmp / f"{name}.onnx", tmp / f"{name}.fp16.onnx", tmp / f"{name}.plan", timing_cache)
    except RuntimeError as exc:
        (tmp / f"{name}.plan").unlink(missing_ok=True)
        return None, f"TensorRT build failed: {exc}"
    return {"file": f"{name}.plan", **info}, None


def tensor_spec(name: str, value: np.ndarray) -> dict:
    return {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}


def versions() -> dict[str, str]:
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
