"""``edgead train MODEL --data DIR --out RUN_DIR``: fit a detector on normal scans and write a run directory.

Every kind writes what ``EdgeDetector.load(RUN_DIR)`` needs: ``model.json`` and ``pipeline.npz`` (the pipeline's
state, see :mod:`edgead.detectors`) and, for networks, ``weights.pt`` plus ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path

from edgead.detectors import KINDS


@dataclass
class TrainOptions:
    preset: str = "cpu"  # "cpu" (default: one category in <= 10 min on 2 cores) or "paper"
    seed: int = 0
    device: str = "cpu"
    resume: bool = False  # continue from RUN_DIR/checkpoints/last.pt
    init: Path | None = None  # fine-tune from a (pre-trained) checkpoint
    steps: int | None = None  # override the preset's number of optimisation steps (per stage)
    progress: bool = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=KINDS, help="detector kind")
    p.add_argument("--data", required=True, type=Path,
                   help="category directory (Real3D-AD or Anomaly-ShapeNet layout) or a folder of normal scans")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--preset", default="cpu", help="configuration preset: cpu (default) or paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    p.add_argument("--init", type=Path, help="checkpoint to fine-tune from (e.g. a pre-trained model)")
    p.add_argument("--steps", type=int, help="override the preset's optimisation steps per stage")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def main(args: argparse.Namespace) -> int:
    from edgead.data import load_train

    clouds = load_train(args.data)
    opts = TrainOptions(preset=args.preset, seed=args.seed, device=args.device, resume=args.resume,
                        init=args.init, steps=args.steps, progress=not args.no_progress)
    train(args.model, clouds, args.out, opts)
    print(f"wrote {args.out}")
    return 0


def train(kind: str, clouds, out: Path, opts: TrainOptions | None = None) -> None:
    """Train ``kind`` on normal clouds ((N_i, 3) float arrays in sensor units) into run directory ``out``."""
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {', '.join(KINDS)}")
    module = importlib.import_module(f"edgead.detectors.{kind}" if kind == "template" else f"edgead.train.{kind}")
    Path(out).mkdir(parents=True, exist_ok=True)
    module.train(clouds, Path(out), opts or TrainOptions())
