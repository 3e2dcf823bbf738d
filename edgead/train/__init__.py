"""Training: fit a detector on normal scans and write a run directory (``edgead.formats.rundir``).

One module per kind, each with ``PRESETS`` (where it has a network) and ``train(clouds, out, opts) -> model_hash``;
:data:`TRAINERS` maps the kinds to them. ``common`` holds what they share (options, seeding, checkpoints and
``--resume``, the training log, the LR schedule, ``--init``); ``patchgen`` is R3D-AD's defect simulator;
``pretrain`` pre-trains DUS-Net on a folder of shapes.

Imports: torch, ``edgead.models``, ``edgead.detectors``, ``edgead.formats``, ``edgead.ops``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.detectors import Kind
from edgead.train import dusnet, r3dad, template
from edgead.train.common import TrainOptions

TRAINERS = {Kind.TEMPLATE: template.train, Kind.DUSNET: dusnet.train, Kind.R3DAD: r3dad.train}


def train(kind: str | Kind, clouds: list[np.ndarray], out: Path, opts: TrainOptions | None = None) -> str:
    """Train ``kind`` on normal clouds ((N_i, 3) float arrays in sensor units) into run directory ``out``; returns
    the run's model hash."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return TRAINERS[Kind.parse(kind)](clouds, out, opts or TrainOptions())


__all__ = ["TRAINERS", "TrainOptions", "train"]
