"""Torch-free detector pipelines: everything around the network, shared by all backends.

A pipeline turns a frame into the network's named inputs (``preprocess``) and the network's named outputs into one
score per point (``postprocess``); ``template`` has no network. Its ``state()`` is what travels with a trained model:
JSON-able metadata (its configuration, holding pre/post-processing fields only) and named numpy arrays. Run
directories and engine manifests store exactly that, so :func:`build_pipeline` recreates the same pipeline whatever
backend runs the network. The geometry a GPU can take over arrives as a parameter (``ops.GeometryOps``).

:class:`Kind` names the detectors; :data:`PIPELINES` is the one registry here (``edgead.models.GRAPHS`` and
``edgead.train.TRAINERS`` are its counterparts on the PyTorch side). Every pipeline applies the not-inspected rule of
:mod:`edgead.detectors.inspection` after alignment.

Imports: numpy, scipy, ``edgead.ops`` and ``edgead.formats`` only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from edgead import ops
from edgead.detectors import dusnet, r3dad, template
from edgead.detectors.inspection import Inspection, NotInspected


class Kind(StrEnum):
    TEMPLATE = "template"
    DUSNET = "dusnet"
    R3DAD = "r3dad"

    @classmethod
    def parse(cls, value: str) -> Kind:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown detector kind {value!r}; expected one of "
                             f"{', '.join(k.value for k in cls)}") from None


class Pipeline(Protocol):
    kind: Kind
    min_points: int  # fewer finite points than this: not inspected

    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], Any, Inspection]:
        """(N, 3) float32 finite sensor-unit points -> (network inputs by name, context for postprocess, what the
        not-inspected rule measured). Raises NotInspected for a frame that cannot be judged."""

    def postprocess(self, points: np.ndarray, context: Any, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Network outputs by name -> (N,) float32 point scores, in input order."""

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able configuration and normalisation, named arrays) that :func:`build_pipeline` takes back."""


PIPELINES: dict[Kind, type] = {Kind.TEMPLATE: template.Pipeline, Kind.DUSNET: dusnet.Pipeline,
                               Kind.R3DAD: r3dad.Pipeline}


def build_pipeline(kind: str | Kind, meta: dict, arrays: dict[str, np.ndarray],
                   geometry: ops.GeometryOps = ops.CPU) -> Pipeline:
    """The pipeline of ``kind`` from its stored state, its GPU-able geometry on ``geometry``."""
    try:
        return PIPELINES[Kind.parse(kind)].from_state(meta, arrays, geometry)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{kind}: incomplete or unknown pipeline state ({type(exc).__name__}: {exc})") from exc


__all__ = ["PIPELINES", "Inspection", "Kind", "NotInspected", "Pipeline", "build_pipeline"]
