"""Torch-free detector pipelines: everything around the network, shared by all backends.

A pipeline turns a frame into the network's named inputs (``preprocess``), and the network's named outputs into
one score per point (``postprocess``). Its ``state()`` is what travels with a trained model: JSON-able metadata
(always with ``kind``) and named numpy arrays. Run directories and engine manifests store exactly that state, so
``build_pipeline`` recreates the same pipeline whatever backend runs the network.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

KINDS = ("template", "dusnet", "r3dad")


class Pipeline(Protocol):
    kind: str
    min_points: int  # fewer finite points than this is a ValueError

    def preprocess(self, points: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
        """(N, 3) float32 finite sensor-unit points -> (network inputs by name, context for postprocess)."""

    def postprocess(self, points: np.ndarray, context: Any, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Network outputs by name -> (N,) float32 point scores, in input order."""

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata including ``kind``, named arrays) that :func:`build_pipeline` takes back."""


def build_pipeline(meta: dict, arrays: dict[str, np.ndarray]) -> Pipeline:
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {', '.join(KINDS)}")
    module = importlib.import_module(f"edgead.detectors.{kind}")
    return module.Pipeline.from_state(meta, arrays)


def save_pipeline(pipeline: Pipeline, json_path: Path, npz_path: Path, extra: dict | None = None) -> None:
    """Write a pipeline's state as ``json_path`` (metadata under "pipeline", plus ``extra``) and ``npz_path``."""
    meta, arrays = pipeline.state()
    np.savez(npz_path, **arrays)
    json_path.write_text(json.dumps({"pipeline": meta, **(extra or {})}, indent=2))


def load_pipeline(json_path: Path, npz_path: Path) -> tuple[Pipeline, dict]:
    """Inverse of :func:`save_pipeline`: (pipeline, the whole JSON document)."""
    try:
        doc = json.loads(Path(json_path).read_text())
        meta = doc["pipeline"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{json_path}: not an edgead model description ({exc})") from exc
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return build_pipeline(meta, arrays), doc
