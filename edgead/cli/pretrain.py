"""``edgead pretrain dusnet|r3dad --data DIR --out CKPT``: pre-train a detector's networks on a folder of shapes
(meshes or point clouds; ``edgead synth --corpus N`` makes one) for ``edgead train KIND --init CKPT``
(``edgead.train.pretrain``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgead.train import TrainOptions, dusnet, r3dad
from edgead.train.pretrain import PRETRAINERS, load_shapes, pretrain


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=[k.value for k in PRETRAINERS], help="the detector whose networks to pre-train")
    p.add_argument("--data", required=True, type=Path,
                   help="folder of shapes: meshes (.obj .stl .ply) or point clouds (.pcd .ply .npy ...)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint file to write (.pt)")
    p.add_argument("--preset", default="cpu", choices=sorted(set(dusnet.PRESETS) | set(r3dad.PRESETS)),
                   help="the network to pre-train; fine-tune with the same preset (default cpu)")
    p.add_argument("--points", type=int, default=20_000, help="points sampled per mesh (default 20000)")
    p.add_argument("--steps", type=int, help="optimisation steps per stage (default: the preset's)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop optimising after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in <out stem>.work/")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    shapes = load_shapes(args.data, args.points, args.seed)
    opts = TrainOptions(preset=args.preset, seed=args.seed, device=args.device, resume=args.resume,
                        steps=args.steps, progress=not args.no_progress, time_budget=args.time_budget)
    record = pretrain(args.model, shapes, args.out, opts)
    print(f"pre-trained on {record['shapes']} shapes in {record['time_s']:.0f} s; wrote {args.out}: "
          f"edgead train {args.model} --preset {args.preset} --init {args.out}")
    return 0
