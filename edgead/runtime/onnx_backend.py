"""ONNX Runtime backend for ``engines/NAME.onnx`` (torch-free).

CPU by default; ``device="cuda"`` uses the CUDA execution provider when the installed onnxruntime has it. The
session is deterministic (sequential execution, deterministic compute, a fixed thread count) so the same frame
gives the same result, and does not spin between runs, which would steal the cores numpy pre/post-processing needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgead.detectors import build_pipeline
from edgead.formats.engine import read_engine
from edgead.runtime.runner import Backend, Loaded, Runner

THREADS_ENV = "EDGEAD_THREADS"  # intra-op threads; default: all cores


def session(path: Path, device: str = "cpu", threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or int(os.environ.get(THREADS_ENV, 0)) or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.use_deterministic_compute = True
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: FP16 graphs log harmless constant-folding warnings on CPU
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if device == "cpu":
        providers = ["CPUExecutionProvider"]
    elif device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(f"{path}: device {device!r} asked for, but this onnxruntime has no CUDA provider "
                               f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
        dev_id = int(device.split(":")[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
    else:
        raise ValueError(f"unknown device {device!r}; expected cpu or cuda[:N]")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def make_runner(sess) -> Runner:
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(inputs) - set(feeds)
        if missing:
            raise ValueError(f"engine inputs missing from the pipeline's feeds: {sorted(missing)}")
        values = sess.run(outputs, {n: np.ascontiguousarray(feeds[n], dtype=np.float32) for n in inputs})
        return dict(zip(outputs, values, strict=True))

    return run


def load(path: Path, device: str = "cpu", threads: int | None = None) -> Loaded:
    """An exported ONNX engine, after checking the manifest's content hash and its files' sha256."""
    engine = read_engine(Path(path))
    pipeline = build_pipeline(engine.kind, engine.doc["pipeline"], engine.arrays)
    runner = make_runner(session(Path(path), device, threads))
    return Loaded(pipeline, runner, Backend.ONNX, engine.name, engine.model_hash)
