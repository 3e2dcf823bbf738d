"""``edgead predict MODEL INPUTS... --out DIR [--threshold F] [--images]``: score scans from files and folders into
``results.csv``, ``results.jsonl`` and heat-map images (``edgead.tools.predict``).

Exit status: 0 when every scan was judged; 1 when any scan could not be (not inspected, unreadable: its row says
why, and it never counts as a pass); 2 for a usage error (no such model or input, results already in ``--out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgead.formats.scene import read_scene
from edgead.runtime import EdgeDetector
from edgead.tools.predict import IMAGES, RESULTS_CSV, RESULTS_JSONL, collect_inputs, predict, prepare_out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="run directory, .onnx or .plan engine (anything EdgeDetector.load takes)")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="point-cloud files (.pcd .ply .npy .npz .txt .xyz .csv) or folders of them (the files "
                        "directly inside)")
    p.add_argument("--out", required=True, type=Path, help="folder for results.csv, results.jsonl and images/")
    p.add_argument("--threshold", help="decision threshold: a number or a calibration file for this model "
                   "(without it scans are scored, not decided)")
    p.add_argument("--images", action="store_true", help="one heat-map PNG per scan in DIR/images/")
    p.add_argument("--scene", help="scene calibration file: crop each scan to the part, as serve does")
    p.add_argument("--force", action="store_true", help="replace the results of an earlier batch in --out")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def main(args: argparse.Namespace) -> int:
    files = collect_inputs(args.inputs)
    scene = read_scene(args.scene) if args.scene else None
    detector = EdgeDetector.load(args.model, threshold=args.threshold, device=args.device)
    prepare_out(args.out, args.force)
    summary = predict(detector, files, args.out, images=args.images, scene=scene, progress=not args.quiet)
    wrote = [RESULTS_CSV, RESULTS_JSONL] + ([f"{len(summary.images)} images in {IMAGES}/"] if args.images else [])
    print(f"{summary.line()}; wrote {', '.join(wrote)} to {args.out}")
    if detector.threshold is None:
        print("no --threshold: scores only, nothing decided (edgead calibrate threshold makes one)")
    return 0 if summary.all_judged else 1
