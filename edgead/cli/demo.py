"""``edgead demo``: synthetic parts through a real service on loopback, results printed live
(``edgead.tools.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgead.tools.demo import DEMO_SEED, ENGINE, ROOT, THRESHOLD, run_demo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=12, help="parts to replay (default 12)")
    p.add_argument("--rate", type=float, default=2.0, help="parts per second (default 2)")
    p.add_argument("--engine", type=Path, help=f"engine to serve (default {ENGINE.relative_to(ROOT)})")
    p.add_argument("--threshold", help=f"threshold or calibration file (default {THRESHOLD.relative_to(ROOT)})")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="synthetic parts seed")
    p.add_argument("--policy", choices=("latest", "every"), default="every")


def main(args: argparse.Namespace) -> int:
    return run_demo(args.frames, args.rate, args.engine, args.threshold, args.seed, args.policy)
