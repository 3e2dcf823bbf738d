"""``edgead train MODEL --data DIR --out RUN_DIR``: fit a detector on normal scans and write a run directory
(``edgead.train``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgead.detectors import Kind
from edgead.formats.dataset import load_train
from edgead.train import TrainOptions, train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=[k.value for k in Kind], help="detector kind")
    p.add_argument("--data", required=True, type=Path,
                   help="category directory (Real3D-AD or Anomaly-ShapeNet layout) or a folder of normal scans")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--preset", default="cpu", help="configuration preset: cpu (default), paper, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    p.add_argument("--init", type=Path, help="checkpoint to fine-tune from (e.g. a pre-trained model)")
    p.add_argument("--steps", type=int, help="override the preset's optimisation steps per stage")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop optimising after this long (stages share it by their step counts); the run records "
                        "the steps done")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def main(args: argparse.Namespace) -> int:
    clouds = load_train(args.data)
    opts = TrainOptions(preset=args.preset, seed=args.seed, device=args.device, resume=args.resume,
                        init=args.init, steps=args.steps, progress=not args.no_progress,
                        time_budget=args.time_budget)
    train(args.model, clouds, args.out, opts)
    print(f"wrote {args.out}")
    return 0
