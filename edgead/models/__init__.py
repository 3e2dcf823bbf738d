"""PyTorch networks (training and export only; the runtime never imports this package).

Each ``edgead.models.<kind>`` module defines ``inference_graph(doc, state) -> torch.nn.Module``: the deterministic
network the runtime runs, with ``input_names`` and ``output_names`` attributes matching its pipeline's feeds and
outputs and a ``forward(*inputs)`` returning a tuple of outputs in that order. The same module is what
``edgead export`` hands to the ONNX exporter, so PyTorch, ONNX Runtime and TensorRT run one definition.
"""

from __future__ import annotations

import importlib
from pathlib import Path

WEIGHTS = "weights.pt"


def load_graph(run_dir: Path, doc: dict, device: str = "cpu"):
    """The inference graph of a run directory, in eval mode on ``device``."""
    import torch

    kind = doc["pipeline"]["kind"]
    state = torch.load(Path(run_dir) / WEIGHTS, map_location="cpu", weights_only=True)
    graph = importlib.import_module(f"edgead.models.{kind}").inference_graph(doc, state)
    return graph.eval().to(device)
