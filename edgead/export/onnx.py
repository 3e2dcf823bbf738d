"""PyTorch inference graph -> ONNX (FP32, and FP16 with FP32 inputs/outputs), and the checks every graph must pass.

Shapes are static: every pipeline feeds fixed-size tensors (its preset fixes G, K or M), which is also what lets
TensorRT build one optimisation profile with min = opt = max.
"""

from __future__ import annotations

import collections
import copy
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

OPSET = 18
MAX_TOPK = 3840  # TensorRT's TopK limit on K
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
CONTROL_FLOW = {"Loop", "Scan", "If"}
# Plain tensor ops that TensorRT's ONNX parser and ONNX Runtime both implement for FP32 and FP16 (see
# docs/export.md): elementwise maths and activations, matrix products, reductions, normalisation, shape plumbing
# on static shapes, gathers and TopK. Anything else in an exported graph fails the graph check.
ALLOWED_OPS = {
    "Abs", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Sin", "Cos", "Erf", "Tanh",
    "Sigmoid", "Relu", "LeakyRelu", "Gelu", "Softmax", "LogSoftmax", "Max", "Min", "Clip", "Where", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or",
    "MatMul", "Gemm", "Conv", "Einsum",
    "ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum", "ReduceProd", "ArgMax", "ArgMin", "TopK", "CumSum",
    "LayerNormalization", "BatchNormalization", "InstanceNormalization",
    "Cast", "CastLike", "Constant", "ConstantOfShape", "Identity", "Shape", "Size", "Range",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Tile", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Pad",
}


def export(graph, feeds: dict[str, np.ndarray], path: Path, half: bool = False) -> None:
    """Export ``graph`` (edgead.models contract) traced on ``feeds`` to ``path``.

    ``half``: weights and arithmetic in float16 with float32 inputs and outputs (Casts at the boundary), the form
    TensorRT 11's strongly typed networks need for an FP16 engine.
    """
    # optimize=False: the exporter's onnxscript optimizer drops ``x + 1e-8`` (seen with torch 2.13 / onnxscript
    # 0.7: DUS-Net's inverse-distance weights became 1 / sqrt(0) = inf). ONNX Runtime and TensorRT fuse anyway.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    model = _half(graph) if half else graph
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in graph.input_names)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, buf, input_names=list(graph.input_names),
                          output_names=list(graph.output_names), opset_version=OPSET, dynamo=True,
                          external_data=False, verbose=False, optimize=False, do_constant_folding=True)
    Path(path).write_bytes(buf.getvalue())


def _half(graph):
    """A float16 copy of ``graph`` behind float32 inputs and outputs."""
    class HalfGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(graph).half()

        def forward(self, *inputs):
            return tuple(o.float() for o in self.inner(*(x.half() for x in inputs)))

    return HalfGraph().eval()


def op_types(path: Path) -> collections.Counter:
    """Count of every op type in the graph, subgraphs included."""
    counts: collections.Counter = collections.Counter()

    def walk(g):
        for node in g.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(onnx.load(str(path)).graph)
    return counts


def check_graph(path: Path) -> list[str]:
    """Problems that would make TensorRT reject or mis-run the graph: [] when there are none."""
    model = onnx.load(str(path))
    ops = op_types(path)
    problems = [f"random op {op} (TensorRT ignores its seed)" for op in sorted(RANDOM_OPS & set(ops))]
    problems += [f"control flow op {op}" for op in sorted(CONTROL_FLOW & set(ops))]
    problems += [f"op {op} outside the allow-list" for op in sorted(set(ops) - ALLOWED_OPS - RANDOM_OPS - CONTROL_FLOW)]
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")})
    for node in model.graph.node:
        if node.op_type == "TopK":
            k = consts.get(node.input[1])
            if k is None:
                problems.append(f"TopK {node.name} with a K computed at run time")
            elif int(np.max(k)) >= MAX_TOPK:
                problems.append(f"TopK {node.name} with K = {int(np.max(k))} >= {MAX_TOPK}")
    return problems
