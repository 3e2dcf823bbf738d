"""PyTorch networks with architecture-only configurations (training and export; the serving side reaches them only
through ``edgead.runtime.torch_backend``).

Each ``edgead.models.<kind>`` module defines ``inference_graph(run, state) -> torch.nn.Module``: the deterministic
network the runtime runs, with ``input_names`` and ``output_names`` attributes matching its pipeline's feeds and
outputs and a ``forward(*inputs)`` returning a tuple of outputs in that order. The same module is what
``edgead export`` hands to the ONNX exporter, so PyTorch, ONNX Runtime and TensorRT run one definition.
:data:`GRAPHS` maps each detector kind with a network to its factory.

Imports: torch, ``edgead.formats``, ``edgead.detectors`` (for the kinds).
"""

from __future__ import annotations

import torch

from edgead.detectors import Kind
from edgead.formats.rundir import Run
from edgead.models import dusnet, r3dad

GRAPHS = {Kind.DUSNET: dusnet.inference_graph, Kind.R3DAD: r3dad.inference_graph}


def load_graph(run: Run, device: str = "cpu") -> torch.nn.Module:
    """The inference graph of a verified run directory, in eval mode on ``device``."""
    state = torch.load(run.weights, map_location="cpu", weights_only=True)
    return GRAPHS[Kind.parse(run.kind)](run, state).eval().to(device)
