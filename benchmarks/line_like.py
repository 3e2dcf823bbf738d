"""The template on every track, rule by rule: the robust-scoring ablation and the "not inspected" rule's margins
(issue 12; the inspection rule of issue 10).

    python benchmarks/line_like.py --data ROOT [--tracks full scan real] [--categories ...] [--work DIR] [--json F]

ROOT holds one ``edgead synth`` benchmark per track (``ROOT/<track>``); their training scans are the same (only the
test scans differ by track), so one template per category, trained on the first track's, serves every track. Each
test scan is aligned once; its points are then scored under every combination of the rules of
``edgead.detectors.scoring`` (the alignment does not depend on them), and O-/P-AUROC, P-AUPR and the detection
rate at 1 % / 5 % false alarms are computed per category and averaged. ``off`` is the template as it was before
the rules (the distance to the nearest reference point). Also prints, per track, the inspection figures of the
good and defective scans (coverage and fitness: their minimum against the rule's thresholds, and how many scans
the rule refuses). Prints markdown tables; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgead.detectors import inspection
from edgead.detectors.scoring import Scoring
from edgead.formats.dataset import find_categories, load_test, load_train
from edgead.formats.rundir import is_run_dir
from edgead.runtime import EdgeDetector
from edgead.runtime.detector import object_score
from edgead.tools.evaluate import FARS, CategoryRun, category_report, defect_depths, defect_type
from edgead.train import TrainOptions
from edgead.train import template as template_train

VARIANTS = {  # rule 1 isolated points, rule 2 distance to the surface, rule 3 mean over 16 neighbours
    "off": Scoring.off(),
    "1": Scoring(isolated=True, surface=False, neighbours=1),
    "2": Scoring(isolated=False, surface=True, neighbours=1),
    "3": Scoring(isolated=False, surface=False, neighbours=16),
    "2+3": Scoring(isolated=False, surface=True, neighbours=16),
    "1+3": Scoring(isolated=True, surface=False, neighbours=16),
    "1+2": Scoring(isolated=True, surface=True, neighbours=1),
    "1+2+3": Scoring(),
}


def category(det: EdgeDetector, name: str, samples, depths: dict[str, float]) -> tuple[dict, list[dict]]:
    """Every variant's metrics on one category's test scans (``category_report`` of ``edgead eval``, without the
    per-scan rows), and each scan's inspection figures."""
    p = det.pipeline
    base = p.config
    scans, figures = [], []
    for s in samples:
        _, aligned, _ = p.preprocess(s.points)
        m = p.surface.measure(aligned)
        figures.append({"name": s.name, "label": int(s.label), "coverage": m.coverage, "fitness": m.fitness,
                        "refused": p.surface.refusal(m, len(aligned)) is not None})
        scans.append((s, aligned))
    out = {}
    for variant, rules in VARIANTS.items():
        p.config = replace(base, scoring=rules)
        run = CategoryRun(name)
        for s, aligned in scans:
            ps = p.postprocess(s.points, aligned, {})
            run.point_scores.append(ps)
            run.point_labels.append(s.labels)
            run.samples.append({"name": s.name, "label": int(s.label), "score": object_score(aligned, ps),
                                "n_points": len(s.points), "timings_ms": {}, "depth": depths.get(s.name),
                                "defect": defect_type(s.name)})
        rep = category_report(run)
        out[variant] = {k: rep[k] for k in ("o_auroc", "p_auroc", "p_aupr", "detection")}
    p.config = base
    return out, figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tracks", nargs="+", default=["full", "scan", "real"])
    ap.add_argument("--categories", nargs="+")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgead_line_like"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    cats = [c.name for c in find_categories(args.data / args.tracks[0])
            if not args.categories or c.name in args.categories]
    result, t0 = {"tracks": {}}, time.time()
    for cat in cats:
        run = args.work / cat
        if not is_run_dir(run):
            template_train.train(load_train(args.data / args.tracks[0] / cat), run, TrainOptions(progress=False))
        det = EdgeDetector.load(run)
        for track in args.tracks:
            d = args.data / track / cat
            metrics, figures = category(det, cat, load_test(d), defect_depths(d))
            result["tracks"].setdefault(track, {})[cat] = {"metrics": metrics, "inspection": figures}
            m = metrics["1+2+3"]
            print(f"[{time.time() - t0:6.0f}s] {track:5} {cat:12} off O {metrics['off']['o_auroc']:.3f} "
                  f"P {metrics['off']['p_auroc']:.3f} AP {metrics['off']['p_aupr']:.3f} | all O {m['o_auroc']:.3f} "
                  f"P {m['p_auroc']:.3f} AP {m['p_aupr']:.3f}", flush=True)
    print(format_tables(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def format_tables(result: dict) -> str:
    """Markdown: the ablation (mean over categories, per track), detection by depth, the inspection margins."""
    lines = ["| rules | " + " | ".join(f"{t} O / P-AUROC / P-AUPR" for t in result["tracks"]) + " |",
             "|---|" + "---|" * len(result["tracks"])]
    for name in VARIANTS:
        cells = []
        for cats in result["tracks"].values():
            mean = {k: np.mean([c["metrics"][name][k] for c in cats.values()])
                    for k in ("o_auroc", "p_auroc", "p_aupr")}
            cells.append(f"{mean['o_auroc']:.3f} / {mean['p_auroc']:.3f} / {mean['p_aupr']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| track | rules | detected at 1 % / 5 % false alarms, by defect depth (% of the part's size) |",
              "|---|---|---|"]
    for track, cats in result["tracks"].items():
        for name in ("off", "1+2+3"):
            parts = []
            for far in FARS:
                per = [c["metrics"][name]["detection"][f"{far:g}"] for c in cats.values()]
                bins = sorted({b for p in per for b in p["by_depth"]}, key=lambda b: float(b.lstrip(">").split("-")[0]))
                parts.append(", ".join(f"{b}: {np.mean([p['by_depth'][b] for p in per if b in p['by_depth']]):.2f}"
                                       for b in bins) + f"; all {np.mean([p['detection'] for p in per]):.2f}")
            lines.append(f"| {track} | {name} | " + " // ".join(parts) + " |")
    lines += ["", f"| track | scans | min coverage (rule: >= {inspection.MIN_COVERAGE:.2f}) | min fitness (rule: >= "
              f"{inspection.MIN_FITNESS:.2f}) | refused |", "|---|---|---|---|---|"]
    for track, cats in result["tracks"].items():
        for label, kind in ((0, "good"), (1, "defective")):
            f = [x for c in cats.values() for x in c["inspection"] if x["label"] == label]
            lines.append(f"| {track} | {len(f)} {kind} | {min(x['coverage'] for x in f):.3f} | "
                         f"{min(x['fitness'] for x in f):.3f} | {sum(x['refused'] for x in f)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
