"""``edgead eval MODEL --data DIR``: metrics, timing and plots on test categories (``edgead.tools.evaluate``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.runtime import EdgeDetector
from edgead.tools.evaluate import format_table, plot, plot_detection, report, run_all
from edgead.tools.figures import check_image_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="run directory, .onnx or .plan engine (anything EdgeDetector.load takes)")
    p.add_argument("--data", required=True, type=Path, help="category directory or a root of category directories")
    p.add_argument("--json", type=Path, help="write the full report (metrics, per-scan scores, timing) here")
    p.add_argument("--plot", type=Path, help="write scores, ROC curves, the confusion matrix and heat maps to this "
                   "image (.png, .jpg, .pdf, .svg), and the detection rate at 1 %% / 5 %% false alarms by defect depth "
                   "and type beside it (NAME_detection.png)")
    p.add_argument("--threshold", help="operating point for the plot: a number or a calibration file (default: the "
                   "F1-optimal threshold on the test scans, marked as optimistic)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def main(args: argparse.Namespace) -> int:
    if args.plot:
        check_image_path(args.plot)  # before the evaluation, not after it
    detector = EdgeDetector.load(args.model, threshold=args.threshold, device=args.device)
    runs = run_all(detector, args.data, progress=not args.quiet)
    rep = report(detector, runs, args.data)
    print(format_table(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        plot(runs, rep, args.plot, detector.threshold)
        print(f"wrote {args.plot}")
        curve = args.plot.with_name(f"{args.plot.stem}_detection.png")
        if plot_detection(rep, curve):
            print(f"wrote {curve}")
    return 0
