"""PyTorch eager runner for run directories: the reference the exported engines are checked against.

The one place on the serving side that builds networks (``edgead.models``); torch is imported only when a run
directory with a network is loaded."""

from __future__ import annotations

import numpy as np

from edgead.formats.rundir import Run
from edgead.runtime.runner import Runner


def load_runner(run: Run, device: str = "cpu") -> Runner:
    import torch

    from edgead.models import load_graph  # the sanctioned exception to the one-way rule: docs/architecture.md

    graph = load_graph(run, device)

    @torch.inference_mode()
    def run_graph(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in graph.input_names]
        outputs = graph(*inputs)
        return {n: o.float().cpu().numpy() for n, o in zip(graph.output_names, outputs, strict=True)}

    return run_graph
