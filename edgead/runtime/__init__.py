"""Loading and running detectors: ``EdgeDetector.load(path)`` and the backends behind it. Never imports torch
unless a run directory with a network is loaded.

- a run directory (``model.json``, ``pipeline.npz``, weights): PyTorch eager (``torch_backend``), or numpy alone
  for ``template``
- ``NAME.onnx`` with its manifest ``NAME.json``: ONNX Runtime (``onnx_backend``)
- ``NAME.plan`` with its manifest ``NAME.json``: TensorRT + pycuda (``trt_backend``), the geometry on the GPU
  (``cuda_ops.CudaOps``, passed to the pipeline when it is built)

Imports: ``edgead.formats``, ``edgead.ops``, ``edgead.detectors``; optional third-party backends inside the
functions that need them; ``edgead.models`` only from ``torch_backend``.
"""

from edgead.runtime.detector import MAX_POINTS, DetectionResult, EdgeDetector, object_score, validate_points
from edgead.runtime.runner import Backend

__all__ = ["MAX_POINTS", "Backend", "DetectionResult", "EdgeDetector", "object_score", "validate_points"]
