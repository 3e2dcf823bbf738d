"""R3D-AD samplers on the synthetic benchmark: deterministic DDIM (what export and the runtime use) vs the paper's
stochastic 200-step DDPM. Reports O-AUROC, P-AUROC, network time per scan and run-to-run score change.

    python benchmarks/sampler_r3dad.py RUN_DIR --data SYNTH/<category> [--ddim 5 10 20] [--json out.json]

Everything around the network (normalisation, ICP, subsampling, scoring) is the run's own pipeline, so only the
sampler differs between rows. The stochastic sampler is run twice with different seeds to show its variation.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgead.detectors import build_pipeline
from edgead.formats.dataset import load_test
from edgead.formats.rundir import read_run
from edgead.models import load_graph
from edgead.models.r3dad import ddim_timesteps
from edgead.runtime import validate_points
from edgead.tools import metrics


def evaluate(pipeline, samples, sampler) -> dict:
    """Run ``sampler`` ((M, 3) tensor -> (M, 3) tensor) on every sample; metrics, mean ms and object scores."""
    labels, scores, p_labels, p_scores, ms = [], [], [], [], []
    for s in samples:
        finite, keep = validate_points(s.points, pipeline.min_points)
        feeds, ctx, _ = pipeline.preprocess(finite)
        t0 = time.perf_counter()
        with torch.inference_mode():
            recon = sampler(torch.from_numpy(feeds["points"])).numpy()
        ms.append((time.perf_counter() - t0) * 1e3)
        point = pipeline.postprocess(finite, ctx, {"recon": recon})
        labels.append(s.label), scores.append(float(point.max()))
        p_labels.append(np.asarray(s.labels)[keep]), p_scores.append(point)
    pl, ps = np.concatenate(p_labels), np.concatenate(p_scores)
    return {"o_auroc": metrics.roc_auc(np.array(labels), np.array(scores)),
            "p_auroc": metrics.roc_auc(pl, ps) if 0 < pl.sum() < len(pl) else None,
            "ms_per_scan": float(np.mean(ms)), "scores": scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="one category directory (Real3D-AD layout)")
    ap.add_argument("--ddim", type=int, nargs="+", default=[5, 10, 20], help="DDIM step counts to compare")
    ap.add_argument("--limit", type=int, help="use only the first N test scans")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score", choices=("nn", "cluster"), help="override the run's score")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    run = read_run(args.run)
    pipeline = build_pipeline(run.kind, run.pipeline, run.arrays)
    if args.score:
        pipeline.config = replace(pipeline.config, score=args.score)
    graph = load_graph(run)
    model = graph.model
    samples = load_test(args.data)[: args.limit]
    rows = {}
    for n in args.ddim:
        steps = ddim_timesteps(model.cfg.num_steps, n)
        rows[f"ddim-{n}"] = evaluate(pipeline, samples, lambda x, s=steps: model.sample_ddim(x[None], graph.z, s)[0])
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        rows[f"ddpm-{model.cfg.num_steps} seed {seed}"] = evaluate(
            pipeline, samples, lambda x, g=gen: model.sample_ddpm(x[None], g)[0])
    a, b = (np.array(r["scores"]) for k, r in rows.items() if k.startswith("ddpm"))
    change = float(np.median(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))
    print(f"{args.data.name}: {len(samples)} scans, score "
          f"{pipeline.config.score}; DDPM seed-to-seed median object-score change {change:.1%}")
    print(f"{'sampler':<20} {'O-AUROC':>8} {'P-AUROC':>8} {'ms/scan':>9}")
    for k, r in rows.items():
        p = "-" if r["p_auroc"] is None else f"{r['p_auroc']:.3f}"
        print(f"{k:<20} {r['o_auroc']:>8.3f} {p:>8} {r['ms_per_scan']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps({"category": args.data.name, "ddpm_seed_change": change, "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
