"""Scores with the nearest-point grid against the exact k-d tree scoring, on every test scan of a benchmark.

    python benchmarks/exactness.py runs/template-{cat} --data data/synth data/synth-scan [--json F]

For each run directory (``{cat}`` is replaced by each category found under the first data root) and each data root
(one per track), every test scan is detected twice: by the run as loaded (registration and scoring through the
stored grid, ``ops.NearestGrid``) and by the same pipeline without it (every nearest point from the k-d tree, the
exact definition). Prints P-AUROC and O-AUROC of both, their differences, the largest absolute point-score
difference on any scan, and the scans the not-inspected rule refused (left out of the metrics; the same for both).
Works for ``template`` runs and for the network detectors (whose ICP uses a grid built at load).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgead import EdgeDetector, ops  # noqa: E402
from edgead.detectors import NotInspected  # noqa: E402
from edgead.formats.dataset import find_categories, load_test  # noqa: E402
from edgead.tools import metrics  # noqa: E402


def without_grid(run: Path) -> EdgeDetector:
    """The detector of ``run`` with every nearest-point query going to the k-d tree."""
    exact = EdgeDetector.load(run)
    index = exact.pipeline.index
    exact.pipeline.index = ops.NearestIndex(index.reference, index.tree)
    return exact


def compare(run: Path, data: Path) -> dict:
    fast, exact = EdgeDetector.load(run), without_grid(run)
    labels, scores, objects, worst = [], {"grid": [], "exact": []}, {"grid": [], "exact": []}, 0.0
    skipped = {"grid": [], "exact": []}  # scans the not-inspected rule refused: must be the same ones
    for s in load_test(data):
        results = {}
        for name, det in (("grid", fast), ("exact", exact)):
            try:
                results[name] = det.detect(s.points)
            except NotInspected:
                skipped[name].append(s.name)
        if len(results) < 2:
            continue
        for name, res in results.items():
            scores[name].append(res.point_scores)
            objects[name].append(res.score)
        labels.append(np.asarray(s.labels, np.uint8))
        worst = max(worst, float(np.nanmax(np.abs(scores["grid"][-1] - scores["exact"][-1]))))
    y = np.concatenate(labels)
    y_obj = np.array([int(lab.any()) for lab in labels])
    out = {"max_abs_point_score_diff": worst, "scans": len(labels), "not_inspected": skipped["exact"],
           "same_not_inspected": skipped["grid"] == skipped["exact"]}
    for name in ("grid", "exact"):
        s = np.concatenate(scores[name])
        keep = np.isfinite(s)
        out[f"p_auroc_{name}"] = metrics.roc_auc(y[keep], s[keep])
        out[f"o_auroc_{name}"] = metrics.roc_auc(y_obj, np.array(objects[name]))
    out["p_auroc_delta"] = out["p_auroc_grid"] - out["p_auroc_exact"]
    out["o_auroc_delta"] = out["o_auroc_grid"] - out["o_auroc_exact"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory; {cat} is replaced by each category")
    ap.add_argument("--data", nargs="+", type=Path, required=True, help="benchmark roots, one per track")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = {}
    for cat in find_categories(args.data[0]):
        for root in args.data:
            r = compare(Path(args.run.replace("{cat}", cat.name)), root / cat.name)
            rows[f"{root.name}/{cat.name}"] = r
            print(f"{root.name:>10s}/{cat.name:<12s} P-AUROC {r['p_auroc_grid']:.4f} vs {r['p_auroc_exact']:.4f} "
                  f"({r['p_auroc_delta']:+.4f})  O-AUROC {r['o_auroc_grid']:.3f} vs {r['o_auroc_exact']:.3f}  "
                  f"max |point score diff| {r['max_abs_point_score_diff']:.3g}  not inspected "
                  f"{len(r['not_inspected'])} (same: {r['same_not_inspected']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
