"""What a backend hands to :class:`~edgead.runtime.detector.EdgeDetector`: the pipeline and the network runner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# named network inputs -> named network outputs; the only part that differs between backends
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Backend(StrEnum):
    NUMPY = "numpy"  # template: no network
    TORCH = "torch"  # a run directory's networks in PyTorch eager: the reference the engines are checked against
    ONNX = "onnx"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class Loaded:
    pipeline: object  # an edgead.detectors.Pipeline
    runner: Runner | None  # None for template
    backend: Backend
    name: str
    model_hash: str
