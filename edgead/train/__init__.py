"""Training: fit a detector on normal scans and write a run directory (``edgead.formats.rundir``).

One module per kind, each with ``PRESETS`` (where it has a network) and ``train(clouds, out, opts) -> model_hash``;
:data:`TRAINERS` maps the kinds to them. ``common`` holds what they share (options, seeding, checkpoints and
``--resume``, the training log, the LR schedule, ``--init``); ``patchgen`` is R3D-AD's defect simulator;
``pretrain`` pre-trains DUS-Net on a folder of shapes.

Imports: torch, ``edgead.models``, ``edgead.detectors``, ``edgead.formats``, ``edgead.ops``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgead.detectors import Kind
from edgead.formats.rundir import prepare_output
from edgead.train import dusnet, r3dad, template
from edgead.train.common import Interrupted, TrainOptions, checkpoint_path

log = logging.getLogger(__name__)

TRAINERS = {Kind.TEMPLATE: template.train, Kind.DUSNET: dusnet.train, Kind.R3DAD: r3dad.train}
PRESETS = {Kind.DUSNET: dusnet.PRESETS, Kind.R3DAD: r3dad.PRESETS}  # template has no presets


def train(kind: str | Kind, clouds: list[np.ndarray], out: Path, opts: TrainOptions | None = None, *,
          force: bool = False):
    """Train ``kind`` on normal clouds ((N_i, 3) float arrays in sensor units) into run directory ``out``.

    ``out`` must be missing or empty, unless ``opts.resume`` continues the run in it or ``force`` replaces a
    previous run's files (``edgead.formats.rundir.prepare_output``)."""
    kind, opts = Kind.parse(kind), opts or TrainOptions()
    if opts.resume and kind not in PRESETS:
        raise ValueError(f"--resume: {kind.value} trains in one pass, without checkpoints; train it again")
    if opts.resume:
        checkpoint_path(out)  # before the slow preparation, not after it
    foreign = prepare_output(Path(out), resume=opts.resume, force=force)
    if foreign and not opts.resume:
        log.warning("kept %s in %s: not part of a run", ", ".join(foreign), out)
    return TRAINERS[kind](clouds, Path(out), opts)


__all__ = ["PRESETS", "TRAINERS", "Interrupted", "TrainOptions", "train"]
