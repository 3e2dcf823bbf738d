"""Where does a trained DUS-Net lose against the golden sample? Three measurements on one category's test scans.

    python benchmarks/diagnose_dusnet.py RUN_DIR --data DIR/<category> [--test DIR/<category>] [--max-test 15]

1. **Ceiling**: the pipeline's own alignment and eqs. 15-17 scoring, with the network replaced by an oracle
   reconstruction: an FPS subsample of the aligned training scans (what a perfect network would emit for a normal
   part), at the run's reconstruction size and at 4x. A network can only match this on data without part-to-part
   variation; it shows how much the reconstruction's size alone costs.
2. **Down-Net**: distance (mm) to the normal surface (the aligned training scans) of the FPS centres the Down-Net
   gets and of the centres it predicts, separately for centres on normal and on defective points. A Down-Net that
   works keeps normal centres on the surface and pulls defect centres back onto it.
3. **Up-Net**: distance (mm) of the reconstructed points to the normal surface, and the run's O-/P-AUROC.
Results are printed as one JSON line per part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from edgead import ops
from edgead.detectors import build_pipeline
from edgead.detectors.dusnet import score_points
from edgead.formats.dataset import load_test, load_train
from edgead.formats.rundir import read_run
from edgead.models import load_graph
from edgead.runtime import object_score
from edgead.tools.metrics import roc_auc


def aurocs(tests, point_scores: list[np.ndarray]) -> dict[str, float]:
    """O-AUROC (shared object score) and pooled P-AUROC of one set of point scores per test scan."""
    objects = [object_score(t.points, s) for t, s in zip(tests, point_scores, strict=True)]
    return {"O-AUROC": round(roc_auc(np.array([t.label for t in tests]), np.array(objects)), 3),
            "P-AUROC": round(roc_auc(np.concatenate([t.labels for t in tests]), np.concatenate(point_scores)), 3)}


def mean_mm(values: list[np.ndarray]) -> float | None:
    """Mean over all the arrays (mm, 3 decimals); None when there are none (e.g. no defective centres)."""
    return round(float(np.concatenate(values).mean()), 3) if values else None


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="category directory with the training scans")
    ap.add_argument("--test", type=Path, help="category directory with the test scans (default: --data)")
    ap.add_argument("--max-test", type=int, default=0, help="first N good and N defective test scans (0: all)")
    args = ap.parse_args()

    run = read_run(args.run)
    pipe = build_pipeline(run.kind, run.pipeline, run.arrays)
    model = load_graph(run)
    scale, size = pipe.normalization.scale, pipe.config.groups * run.arch["gamma"]
    surface = np.concatenate([pipe.thin(pipe.to_model_frame(c)) for c in load_train(args.data)])
    tests = load_test(args.test or args.data)
    if args.max_test:
        n = args.max_test
        tests = [t for t in tests if t.label == 0][:n] + [t for t in tests if t.label == 1][:n]

    frames = [pipe.to_model_frame(t.points) for t in tests]
    for m in (size, 4 * size):
        oracle = surface[ops.farthest_point_sample(surface, min(m, len(surface)))]
        print(json.dumps({"part": "ceiling", "reconstruction_points": len(oracle),
                          **aurocs(tests, [score_points(x, oracle) * scale for x in frames])}), flush=True)

    centre = {"normal_in": [], "normal_pred": [], "defect_in": [], "defect_pred": []}
    recon_off, scores = [], []
    for t, x in zip(tests, frames, strict=True):
        patches, centers = pipe.group(pipe.thin(x))
        p, c = torch.from_numpy(patches)[None], torch.from_numpy(centers)[None]
        pred = model.centers(p, c)
        recon = model.up(pred)[0].numpy()
        pred = pred[0].numpy()
        defect = t.labels[ops.knn(centers, x, 1).idx[:, 0]].astype(bool)
        for name, mask in (("normal", ~defect), ("defect", defect)):
            if mask.any():
                centre[f"{name}_in"].append(ops.nearest_distance(centers[mask], surface) * scale)
                centre[f"{name}_pred"].append(ops.nearest_distance(pred[mask], surface) * scale)
        recon_off.append(ops.nearest_distance(recon, surface) * scale)
        scores.append(score_points(x, recon, pipe.config.score, pipe.config.normal_k) * scale)
    print(json.dumps({"part": "down-net", **{f"{k}_mm": mean_mm(v) for k, v in centre.items()}}), flush=True)
    print(json.dumps({"part": "up-net", "recon_to_surface_mm": mean_mm(recon_off), **aurocs(tests, scores)}))


if __name__ == "__main__":
    main()
