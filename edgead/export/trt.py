"""TensorRT FP16 plan from the exported ONNX, against TensorRT's documented Python API. Kept thin.

TensorRT 10: parse the FP32 ONNX and set ``BuilderFlag.FP16``. TensorRT 11 removed that flag and builds strongly
typed networks, so there the FP16 ONNX (``NAME.fp16.onnx``: fp16 weights and arithmetic, fp32 inputs/outputs) is
parsed with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``. Either way the built engine is inspected and the
build fails if no layer runs in half precision (a silent FP32 fallback).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgead.export.kernels import gpu_arch


def unavailable_reason() -> str | None:
    """Why no plan can be built or run here, or None when TensorRT, pycuda and a GPU are all present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"TensorRT not installed: {exc}"
    if gpu_arch() is None:
        return "no CUDA GPU visible (pycuda missing, no driver, or no device)"
    return None


def build(onnx_fp32: Path, onnx_fp16: Path, plan: Path, timing_cache: Path) -> dict:
    """Build and write ``plan``; returns manifest facts (precision, arch, version, half-precision layer share)."""
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    strongly_typed = major >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    source = onnx_fp16 if strongly_typed else onnx_fp32
    if not parser.parse(Path(source).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {source.name}: {errors}")
    config = builder.create_builder_config()
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for the inspector
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):  # static shapes: one profile, min = opt = max
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, tensor.shape, tensor.shape, tensor.shape)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # from another GPU or TensorRT: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {source.name}")
    built_cache = config.get_timing_cache()
    if built_cache is not None:
        timing_cache.write_bytes(memoryview(built_cache.serialize()))
    plan.write_bytes(memoryview(serialized))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    half, total = half_layers(info)
    if half == 0:
        raise RuntimeError(f"TensorRT built {plan.name} entirely in FP32 (0 of {total} layers in FP16); refusing it")
    return {"precision": "fp16", "tensorrt": trt.__version__, "gpu_arch": gpu_arch(), "source": source.name,
            "strongly_typed": strongly_typed, "fp16_layers": half, "layers": total}


def half_layers(info: dict) -> tuple[int, int]:
    """(layers with a half-precision output, all layers) from the engine inspector's JSON document.

    TensorRT 10 writes each output's precision into a combined ``Format/Datatype`` string ("Row major linear
    FP16 format" / "... Half ..."); TensorRT 11 has a separate ``Datatype`` field ("Half"). Both are read.
    """
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]

    def is_half(output) -> bool:
        if not isinstance(output, dict):
            return False
        text = f"{output.get('Format/Datatype', '')} {output.get('Datatype', '')}".lower()
        return "half" in text or "fp16" in text

    half = sum(any(is_half(o) for o in layer.get("Outputs", [])) for layer in layers)
    return half, len(layers)
