"""``edgead bench ENGINE [--points 400000] [--frames 50] [--reference RUN_DIR] [--data DIR]``: per-stage latency,
interleaved with the plain k-d tree pass (``edgead.tools.bench``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.tools.bench import format_report, run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("engine", type=Path, help="engines/NAME.onnx, NAME.plan, or a run directory")
    p.add_argument("--points", type=int, default=400_000, help="points per frame (default 400000)")
    p.add_argument("--frames", type=int, default=50, help="timed frames per detector (default 50)")
    p.add_argument("--reference", type=Path, help="run directory of the PyTorch reference (default: the manifest's)")
    p.add_argument("--reference-frames", type=int, default=5, help="timed frames of the slow eager reference")
    p.add_argument("--threads", type=int, help="threads for ONNX Runtime and torch (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--data", type=Path, help="category directory whose training scans the plain k-d tree pass builds "
                                             "its tree on (default: the detector's stored reference)")
    p.add_argument("--json", type=Path, help="also write the figures here")


def main(args: argparse.Namespace) -> int:
    report = run(args.engine, args.points, args.frames, args.reference, args.reference_frames, args.threads,
                 args.device, args.data, progress=not args.quiet)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
