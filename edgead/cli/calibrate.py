"""``edgead calibrate scene|threshold``: what is specific to one line, kept apart from the engine
(``edgead.tools.calibrate``)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgead.formats.pointcloud import read_points
from edgead.formats.scene import read_scene, write_scene
from edgead.formats.threshold import write_threshold
from edgead.runtime import EdgeDetector
from edgead.tools.calibrate import anomalous_scans, calibrate_scene, calibrate_threshold, normal_scans, unresolved_far

log = logging.getLogger("edgead.calibrate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scene", help="fit the conveyor plane and the region of interest above it")
    s.add_argument("scan", type=Path, help="a scan (.pcd, .ply, .npy) of the conveyor, with or without a part")
    s.add_argument("--out", type=Path, default=Path("calibration/scene.json"))
    s.add_argument("--tol", type=float, default=1.0, help="plane inlier distance, mm (sensor noise)")
    s.add_argument("--min-height", type=float, help="mm above the plane where the ROI starts (default 3 x tol)")
    s.add_argument("--max-height", type=float, default=500.0, help="mm above the plane where the ROI ends")
    s.add_argument("--margin", type=float, default=0.0, help="mm added around the plane's extent")
    t = sub.add_parser("threshold", help="decision threshold from held-out scans")
    t.add_argument("--engine", required=True, help="run directory, .onnx or .plan engine")
    t.add_argument("--normal", required=True, type=Path,
                   help="held-out good scans: a category directory (its good test scans) or a folder of scans; "
                        "training scans and defect-labelled scans are refused")
    t.add_argument("--anomalous", type=Path, help="defective scans (a category directory: its defective test "
                   "scans; or a folder): choose the F1-optimal threshold instead")
    t.add_argument("--far", type=float, default=0.01,
                   help="target false-alarm rate on good parts (default 0.01: needs >= 100 good scans to resolve; "
                        "fewer give the highest good score)")
    t.add_argument("--scene", help="scene calibration to crop the scans with, as serve does")
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", type=Path, required=True, help="calibration file to write (JSON)")


def main(args: argparse.Namespace) -> int:
    if args.what == "scene":
        scene = calibrate_scene(read_points(args.scan), args.tol, args.min_height, args.max_height, args.margin)
        write_scene(args.out, scene)
        doc = asdict(scene)
        print(f"plane normal {np.round(doc['axes'][2], 4).tolist()}, ROI {np.round(doc['lo'], 1).tolist()} .. "
              f"{np.round(doc['hi'], 1).tolist()} mm (plane frame)")
    else:
        if not 0 <= args.far < 1:
            raise ValueError(f"--far must be in [0, 1), got {args.far}")
        det = EdgeDetector.load(args.engine, device=args.device)
        normal = normal_scans(args.normal)
        anomalous = anomalous_scans(args.anomalous) if args.anomalous else None
        print(f"good: {normal.source}" + (f"; defective: {anomalous.source}" if anomalous else ""))
        doc = calibrate_threshold(det, normal.points, anomalous.points if anomalous else None, args.far,
                                  read_scene(args.scene) if args.scene else None, progress=not args.quiet)
        doc["engine"] = str(args.engine)
        write_threshold(args.out, doc)
        if (warning := unresolved_far(doc)) is not None:
            log.warning(warning)
        method = f"F1 {doc['f1']:.3f}, recall {doc['recall']:.3f}" if doc["method"] == "f1" else \
            f"target false-alarm rate {doc['far_target']:g}"
        n, above = doc["n_normal"], round(doc["far_measured"] * doc["n_normal"])
        print(f"threshold {doc['threshold']:.6g} ({method}); {above} of {n} good scans above it: the true false-alarm "
              f"rate is below {doc['far_upper_95']:.1%} at 95 % confidence")
    print(f"wrote {args.out}")
    return 0
