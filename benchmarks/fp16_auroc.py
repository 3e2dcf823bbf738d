"""FP16 numerics on the CPU: object and point AUROC of one synthetic category for the PyTorch run, the FP32 ONNX
engine and the FP16 ONNX graph (ONNX Runtime CPU), plus their score differences. Recorded in docs/export.md.

    python benchmarks/fp16_auroc.py RUN_DIR CATEGORY_DIR [--out engines_dir]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from edgead.export import export_run
from edgead.formats.dataset import load_test
from edgead.formats.digest import hashed
from edgead.formats.engine import read_engine
from edgead.runtime import EdgeDetector
from edgead.tools.metrics import roc_auc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("category", type=Path)
    p.add_argument("--out", type=Path, default=Path("/tmp/fp16_auroc_engines"))
    args = p.parse_args()
    doc = export_run(args.run, args.out, "model", "onnx")
    # The FP16 graph as an engine of its own: same manifest, FP16 file in the ONNX slot.
    fp16 = args.out / "fp16"
    fp16.mkdir(exist_ok=True)
    for f in ("model.npz", "model.json"):
        shutil.copy(args.out / f, fp16 / f)
    shutil.copy(args.out / "model.fp16.onnx", fp16 / "model.onnx")
    m = json.loads((fp16 / "model.json").read_text())
    m["files"]["model.onnx"] = m["files"]["model.fp16.onnx"]
    (fp16 / "model.json").write_text(json.dumps(hashed(m)))  # a new engine of its own: its own content hash
    read_engine(fp16 / "model.onnx")
    detectors = {"torch": EdgeDetector.load(args.run), "onnx_fp32": EdgeDetector.load(args.out / "model.onnx"),
                 "onnx_fp16": EdgeDetector.load(fp16 / "model.onnx")}
    samples = load_test(args.category)
    results = {k: [d.detect(s.points) for s in samples] for k, d in detectors.items()}
    labels = np.array([s.label for s in samples])
    point_labels = np.concatenate([s.labels for s in samples])
    report = {"export_parity": doc["parity"], "samples": len(samples)}
    for k, rs in results.items():
        scores = np.array([r.score for r in rs])
        point = np.concatenate([np.nan_to_num(r.point_scores, nan=0.0) for r in rs])
        report[k] = {"object_auroc": roc_auc(labels, scores), "point_auroc": roc_auc(point_labels, point),
                     "finite": bool(np.isfinite(scores).all())}
        if k != "torch":
            ref = np.concatenate([r.point_scores for r in results["torch"]])
            report[k]["point_score_max_abs_vs_torch"] = float(np.nanmax(np.abs(point - ref)))
            report[k]["point_score_mean_abs_vs_torch"] = float(np.nanmean(np.abs(point - ref)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
