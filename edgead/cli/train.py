"""``edgead train MODEL --data DIR --out RUN_DIR``: fit a detector on normal scans and write a run directory
(``edgead.train``)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from edgead.detectors import Kind
from edgead.formats.dataset import load_train, training_concerns
from edgead.train import PRESETS, Interrupted, TrainOptions, train

log = logging.getLogger("edgead.train")


def preset_help() -> str:
    listed = "; ".join(f"{kind.value}: {', '.join(presets)}" for kind, presets in PRESETS.items())
    return f"configuration preset ({listed}; default cpu; template has none). docs/training.md: what each costs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=[k.value for k in Kind], help="detector kind")
    p.add_argument("--data", required=True, type=Path,
                   help="category directory (Real3D-AD or Anomaly-ShapeNet layout: its train/ scans) or a folder of "
                        "normal scans")
    p.add_argument("--out", required=True, type=Path, help="run directory to write (new or empty)")
    p.add_argument("--force", action="store_true",
                   help="replace the run in a non-empty --out (files that are not a run's are kept)")
    p.add_argument("--preset", help=preset_help())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/checkpoints/last.pt (saved every 100 steps and on Ctrl-C)")
    p.add_argument("--init", metavar="CKPT|none",
                   help="checkpoint to fine-tune from (edgead pretrain); default: the weights shipped for the preset "
                        "if it has them (dusnet cpu), else none; none: train from scratch")
    p.add_argument("--steps", type=int, help="override the preset's optimisation steps per stage")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop optimising after this long (stages share it by their step counts); the run records "
                        "the steps done")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this run."""
    argv = ["edgead", "train", args.model, "--data", str(args.data), "--out", str(args.out)]
    for option in ("preset", "seed", "device", "steps"):
        value = getattr(args, option)
        if value is not None and (option, value) not in (("seed", 0), ("device", "cpu")):
            argv += [f"--{option}", str(value)]
    return shlex.join(argv + ["--resume"])


def main(args: argparse.Namespace) -> int:
    kind = Kind.parse(args.model)
    if args.preset is not None and kind not in PRESETS:
        raise ValueError(f"--preset: {kind.value} has no presets")
    if args.preset is not None and args.preset not in PRESETS[kind]:
        raise ValueError(f"--preset {args.preset}: {kind.value} presets are {', '.join(PRESETS[kind])}")
    clouds = load_train(args.data)
    for concern in training_concerns(args.data):
        log.warning(concern)
    opts = TrainOptions(preset=args.preset or "cpu", seed=args.seed, device=args.device, resume=args.resume,
                        init=None if args.init in (None, "none") else Path(args.init),
                        pretrained=args.init != "none", steps=args.steps, progress=not (args.no_progress or args.quiet),
                        time_budget=args.time_budget)
    try:
        train(kind, clouds, args.out, opts, force=args.force)
    except Interrupted as stop:
        print(f"edgead train: interrupted {stop}; continue with: {resume_command(args)}", file=sys.stderr)
        return 130
    print(f"wrote {args.out}")
    return 0
