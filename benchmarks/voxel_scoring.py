"""Speed and AUROC of scoring one point per voxel (``score_voxel``) against scoring every point.

    python benchmarks/voxel_scoring.py MODEL --data DIR/<category> --sizes 0,0.01,0.015

MODEL is anything ``EdgeDetector.load`` takes. Sizes are in the pipeline's own units: normalised for ``dusnet`` and
``r3dad`` (multiply by the model's scale for mm), mm for ``template``. Every size runs the same scans through the
same loaded detector, so the rows differ only in the voxel size. One JSON line per size.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from edgead.formats.dataset import load_test
from edgead.runtime import EdgeDetector
from edgead.tools.evaluate import category_report, run_category


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True, help="one category directory (Real3D-AD layout)")
    p.add_argument("--sizes", default="0,0.01,0.015", help="comma-separated voxel edges (0: every point)")
    args = p.parse_args()
    det = EdgeDetector.load(args.model)
    samples = load_test(args.data)
    for size in (float(s) for s in args.sizes.split(",")):
        det.pipeline.config = replace(det.pipeline.config, score_voxel=size)
        rep = category_report(run_category(det, args.data.name, samples))
        row = {k: None if rep[k] is None else round(rep[k], 4) for k in ("o_auroc", "p_auroc")}
        print(json.dumps({"model": str(args.model), "score_voxel": size, **row,
                          "total_ms_median": round(rep["total_ms_median"], 1),
                          "points_per_frame": round(rep["points_per_frame"])}), flush=True)


if __name__ == "__main__":
    main()
