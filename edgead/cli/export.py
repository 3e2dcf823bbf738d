"""``edgead export RUN_DIR --out engines/ [--name NAME] [--format onnx|trt|all]``: engines an edge box runs without
PyTorch (``edgead.export``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgead.export import Format, export_run

log = logging.getLogger("edgead.export")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory written by `edgead train` (dusnet or r3dad)")
    p.add_argument("--out", type=Path, default=Path("engines"), help="output folder (default: engines/)")
    p.add_argument("--name", help="engine name (default: the detector kind)")
    p.add_argument("--format", choices=[f.value for f in Format], default="all",
                   help="onnx; trt (fails without TensorRT and a GPU); all (default: onnx, plus trt where possible)")
    p.add_argument("--frame", type=Path,
                   help="point cloud for the parity check (default: the run's stored reference shape)")
    p.add_argument("--score-voxel", type=float, metavar="SIZE",
                   help="score one point per voxel of this edge (normalised units) and spread it over the voxel; "
                        "0: score every point (default: the run's, 0.015 in the cpu presets; docs/performance.md)")


def main(args: argparse.Namespace) -> int:
    doc = export_run(args.run_dir, args.out, args.name, args.format, args.frame, args.score_voxel,
                     progress=not args.quiet)
    for key, figures in doc["parity"].items():
        print(f"parity {key}: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    if not doc["fp16_within_tolerance"]:
        fig = doc["parity"]["onnx_fp16_vs_torch"]
        log.warning(f"the FP16 engine's point scores differ from PyTorch's by up to {fig['score_max_abs']:.3g} "
                    f"against scores up to {fig['score_max_ref']:.3g}, beyond the stated tolerance of "
                    f"{doc['fp16_score_tolerance']:.0%}; use the FP32 engine ({doc['name']}.onnx) or check the model")
    if doc.get("trt_skipped"):
        print(f"no plan: {doc['trt_skipped']}")
    print(f"wrote {', '.join(sorted(doc['files']))} to {args.out}")
    return 0
