"""TensorRT backend for ``engines/NAME.plan`` (torch-free): the plan plus the grouping kernels on the GPU.

Everything lives in GPU 0's primary context on one CUDA stream; input and output buffers are allocated once at load
(shapes are static). The plan, its pipeline arrays and the compiled kernels are checked against the manifest's
sha256 before anything is deserialised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.detector import EdgeDetector
from edgead.export.manifest import load_engine_pipeline, manifest_path, verify_file


class TrtRunner:
    def __init__(self, plan: Path, stream):
        import pycuda.driver as cuda
        import tensorrt as trt

        self.cuda, self.stream = cuda, stream
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{plan}: TensorRT could not deserialise the plan (other TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs, self.host, self.dev = [], [], {}, {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            self.host[name] = cuda.pagelocked_empty(shape, dtype)
            self.dev[name] = cuda.mem_alloc(self.host[name].nbytes)
            self.context.set_tensor_address(name, int(self.dev[name]))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self.inputs:
            value = np.asarray(feeds[name], dtype=self.host[name].dtype)
            if value.shape != self.host[name].shape:
                raise ValueError(f"engine input {name!r}: shape {value.shape}, the plan takes {self.host[name].shape}")
            self.host[name][...] = value
            self.cuda.memcpy_htod_async(self.dev[name], self.host[name], self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execution failed")
        for name in self.outputs:
            self.cuda.memcpy_dtoh_async(self.host[name], self.dev[name], self.stream)
        self.stream.synchronize()
        return {name: self.host[name].astype(np.float32) for name in self.outputs}  # copies: buffers are reused


def load(path: Path, device: str = "cuda") -> EdgeDetector:
    """An EdgeDetector on a TensorRT plan, grouping and scoring kernels on the same GPU and stream."""
    if device not in ("cuda", "cuda:0", "cpu"):  # "cpu" is EdgeDetector.load's default: a plan always runs on GPU 0
        raise ValueError(f"TensorRT plans run on cuda:0, not {device!r}")
    pipeline, doc = load_engine_pipeline(Path(path))  # hashes first: nothing unverified reaches TensorRT
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"{path}: a .plan needs TensorRT and pycuda ({exc}); use the .onnx engine instead") from exc
    from edgead.runtime.cuda_ops import CudaOps, primary_context

    folder = manifest_path(Path(path)).parent
    for stems in doc.get("kernels", {}).get("modules", {}).values():
        for fname in stems:
            verify_file(doc, folder / fname)
    if "kernels" not in doc:
        raise RuntimeError(f"{path}: exported without compiled grouping kernels (no nvcc at export time)")
    primary_context()
    stream = cuda.Stream()
    pipeline.ops = CudaOps(folder, stream)
    runner = TrtRunner(Path(path), stream)
    return EdgeDetector(pipeline, runner, backend="tensorrt", name=doc.get("name", ""),
                        model_hash=doc.get("model_hash", ""), threshold=doc.get("threshold"))
