"""PyTorch eager runner for run directories: the reference the exported engines are checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.detector import Runner


def load_runner(run_dir: Path, doc: dict, device: str = "cpu") -> Runner:
    import torch

    from edgead.models import load_graph

    graph = load_graph(run_dir, doc, device)

    @torch.inference_mode()
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in graph.input_names]
        outputs = graph(*inputs)
        return {n: o.float().cpu().numpy() for n, o in zip(graph.output_names, outputs, strict=True)}

    return run
