"""Backends behind ``EdgeDetector.load``. Importing this package never imports torch.

- a run directory (``model.json``, ``pipeline.npz``, weights): PyTorch eager, or numpy alone for ``template``
- ``NAME.onnx`` with its manifest ``NAME.json``: ONNX Runtime
- ``NAME.plan`` with its manifest ``NAME.json``: TensorRT + pycuda, grouping kernels on the GPU
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgead.detector import EdgeDetector
from edgead.detectors import load_pipeline

RUN_JSON, RUN_NPZ = "model.json", "pipeline.npz"
BACKENDS = {".onnx": "edgead.runtime.onnx_backend", ".plan": "edgead.runtime.trt_backend"}


def load(path: Path, device: str = "cpu") -> EdgeDetector:
    if path.is_dir():
        return load_run(path, device)
    module = BACKENDS.get(path.suffix)
    if module is None:
        raise ValueError(f"{path}: not an engine (.onnx, .plan) or a run directory")
    return importlib.import_module(module).load(path, device=device)


def load_run(run_dir: Path, device: str = "cpu") -> EdgeDetector:
    if not (run_dir / RUN_JSON).exists():
        raise FileNotFoundError(f"{run_dir}: no {RUN_JSON}; not a run directory written by `edgead train`")
    pipeline, doc = load_pipeline(run_dir / RUN_JSON, run_dir / RUN_NPZ)
    runner = None
    if pipeline.kind != "template":
        from edgead.runtime.torch_backend import load_runner  # imports torch: only for run directories

        runner = load_runner(run_dir, doc, device)
    return EdgeDetector(pipeline, runner, backend="torch" if runner else "numpy", name=doc.get("name", ""),
                        model_hash=doc.get("model_hash", ""), threshold=doc.get("threshold"))
