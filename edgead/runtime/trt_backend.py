"""TensorRT backend for ``engines/NAME.plan`` (torch-free): the plan plus the grouping kernels on the GPU.

Everything lives in GPU 0's primary context (``GpuContext``, pushed around each call from whichever thread makes
it) on one CUDA stream; input and output buffers are allocated once at load (shapes are static). The manifest, the
plan, its pipeline arrays and the compiled kernels are checked against their hashes before anything is
deserialised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.detectors import build_pipeline
from edgead.formats.engine import read_engine
from edgead.runtime.cuda_ops import CudaOps, GpuContext
from edgead.runtime.runner import Backend, Loaded


class TrtRunner:
    def __init__(self, plan: Path, context: GpuContext, stream):
        import tensorrt as trt

        self.cuda, self.context, self.stream = context.cuda, context, stream
        self.logger = trt.Logger(trt.Logger.WARNING)
        with context:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(plan).read_bytes())
            if self.engine is None:
                raise RuntimeError(f"{plan}: TensorRT could not deserialise the plan (other TensorRT version or GPU?)")
            self.execution = self.engine.create_execution_context()
            self.inputs, self.outputs, self.host, self.dev = [], [], {}, {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                shape = tuple(self.engine.get_tensor_shape(name))
                dtype = trt.nptype(self.engine.get_tensor_dtype(name))
                self.host[name] = self.cuda.pagelocked_empty(shape, dtype)
                self.dev[name] = self.cuda.mem_alloc(max(self.host[name].nbytes, 4))
                self.execution.set_tensor_address(name, int(self.dev[name]))
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (self.inputs if is_input else self.outputs).append(name)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.context:
            for name in self.inputs:
                value = np.asarray(feeds[name], dtype=self.host[name].dtype)
                if value.shape != self.host[name].shape:
                    raise ValueError(f"engine input {name!r}: shape {value.shape}, the plan takes "
                                     f"{self.host[name].shape}")
                self.host[name][...] = value
                self.cuda.memcpy_htod_async(self.dev[name], self.host[name], self.stream)
            if not self.execution.execute_async_v3(self.stream.handle):
                raise RuntimeError("TensorRT execution failed")
            for name in self.outputs:
                self.cuda.memcpy_dtoh_async(self.host[name], self.dev[name], self.stream)
            self.stream.synchronize()
        return {name: self.host[name].astype(np.float32) for name in self.outputs}  # copies: buffers are reused


def kernel_files(doc: dict) -> tuple[str, ...]:
    """The compiled kernel files an engine's manifest lists."""
    return tuple(f for files in doc.get("kernels", {}).get("modules", {}).values() for f in files)


def load(path: Path, device: str = "cuda") -> Loaded:
    """A TensorRT plan with its grouping and scoring kernels on the same GPU and stream."""
    if device not in ("cuda", "cuda:0", "cpu"):  # "cpu" is EdgeDetector.load's default: a plan always runs on GPU 0
        raise ValueError(f"TensorRT plans run on cuda:0, not {device!r}")
    manifest = read_engine(Path(path)).doc  # the manifest's own hash first: it names the kernel files
    if "kernels" not in manifest:
        raise RuntimeError(f"{path}: exported without compiled grouping kernels (no nvcc at export time)")
    engine = read_engine(Path(path), also=kernel_files(manifest))  # nothing unverified reaches TensorRT or the GPU
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"{path}: a .plan needs TensorRT and pycuda ({exc}); use the .onnx engine instead") from exc
    context = GpuContext(0)
    with context:
        stream = context.cuda.Stream()
    geometry = CudaOps(engine.folder, context, stream)
    pipeline = build_pipeline(engine.kind, engine.doc["pipeline"], engine.arrays, geometry)
    return Loaded(pipeline, TrtRunner(Path(path), context, stream), Backend.TENSORRT, engine.name, engine.model_hash)
