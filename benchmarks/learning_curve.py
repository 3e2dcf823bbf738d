"""DUS-Net from scratch vs fine-tuned from a pre-trained checkpoint, at the same per-category budget, along a
learning curve (issue 17).

    python benchmarks/learning_curve.py [--init CKPT] --data ROOT [--tracks full scan] [--categories ...]
        [--steps 300 1000 3000] [--max-test N] [--work DIR] [--json F]

ROOT holds one folder per track (``edgead synth --out ROOT/<track> --track <track>``). For every category, variant
(scratch, pretrained) and step count S, a run is trained with ``--steps S`` (S Down-Net and S Up-Net steps, the
cpu preset otherwise) on the category's training scans of the first track, and evaluated on every track. Runs are
kept in --work and reused, so the curve can be extended (more steps, more tracks) without training again. Prints
one line per evaluation and a table of means over the categories; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgead.formats.dataset import find_categories, load_test, load_train
from edgead.formats.rundir import is_run_dir
from edgead.runtime import EdgeDetector
from edgead.tools.evaluate import balanced_subset, category_report, run_category
from edgead.train import TrainOptions
from edgead.train import dusnet as dus_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", type=Path, default=dus_train.PRETRAINED["cpu"],
                    help="pre-trained checkpoint (edgead pretrain dusnet; default: the one shipped for the cpu preset)")
    ap.add_argument("--data", type=Path, required=True, help="root with one synthetic benchmark per track")
    ap.add_argument("--tracks", nargs="+", default=["full", "scan"])
    ap.add_argument("--categories", nargs="+", help="default: every category of the first track")
    ap.add_argument("--steps", nargs="+", type=int, default=[300, 1000, 3000])
    ap.add_argument("--max-test", type=int, help="test scans per category and track (default: all)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgead_learning_curve"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cats = [Path(c).name for c in find_categories(args.data / args.tracks[0])]
    cats = [c for c in cats if not args.categories or c in args.categories]
    rows, t0 = [], time.time()
    for cat in cats:
        clouds = load_train(args.data / args.tracks[0] / cat)
        tests = {t: balanced_subset(load_test(args.data / t / cat), args.max_test) for t in args.tracks}
        for steps in args.steps:
            for variant, init in (("scratch", None), ("pretrained", args.init)):
                run = args.work / variant / cat / str(steps)
                if not is_run_dir(run):
                    opts = TrainOptions(preset="cpu", steps=steps, init=init, pretrained=False, progress=False)
                    dus_train.train(clouds, run, opts)
                det = EdgeDetector.load(run)
                for track, samples in tests.items():
                    m = category_report(run_category(det, cat, samples))
                    rows.append({"category": cat, "variant": variant, "steps": steps, "track": track,
                                 "o_auroc": m["o_auroc"], "p_auroc": m["p_auroc"], "p_aupr": m["p_aupr"]})
                    print(f"[{time.time() - t0:6.0f}s] {cat:12s} {variant:10s} {steps:6d} {track:5s} "
                          f"O-AUROC {m['o_auroc']:.3f} P-AUROC {m['p_auroc']:.3f}", flush=True)
    print(table(rows, args.tracks, args.steps, cats))
    if args.json:
        args.json.write_text(json.dumps({"init": str(args.init), "categories": cats, "rows": rows}, indent=1))


def table(rows: list[dict], tracks: list[str], steps: list[int], cats: list[str]) -> str:
    """Means over the categories: one row per (variant, steps), O-/P-AUROC per track."""
    head = "| variant | steps | " + " | ".join(f"{t} O-AUROC | {t} P-AUROC" for t in tracks) + " |"
    lines = [f"Categories: {', '.join(cats)}.", "", head, "|---" * (2 + 2 * len(tracks)) + "|"]
    for variant in ("scratch", "pretrained"):
        for s in steps:
            cells = []
            for t in tracks:
                sel = [r for r in rows if (r["variant"], r["steps"], r["track"]) == (variant, s, t)]
                cells += [f"{np.mean([r[m] for r in sel]):.3f}" if sel else "-" for m in ("o_auroc", "p_auroc")]
            lines.append(f"| {variant} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
