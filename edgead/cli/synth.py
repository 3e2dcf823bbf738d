"""``edgead synth --out DIR``: the synthetic benchmark in the Real3D-AD layout (``edgead.tools.synth``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgead.tools.corpus import generate_corpus
from edgead.tools.synth import CATEGORIES, TEST_FRACTION, TRACKS, TRAIN_POINTS, generate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output directory (one sub-directory per category)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--track", choices=TRACKS, default="full",
                   help="full: 360-degree test scans; scan: one-sided test scans from a random viewpoint above; "
                        "real: one-sided test scans through a stereo depth camera's artefacts (docs/data.md)")
    p.add_argument("--categories", nargs="+", choices=CATEGORIES, metavar="NAME",
                   help=f"categories to generate (default all: {', '.join(CATEGORIES)})")
    p.add_argument("--points", type=int, default=TRAIN_POINTS,
                   help=f"points per training scan (default {TRAIN_POINTS}); test scans get {TEST_FRACTION:g}x")
    p.add_argument("--train", type=int, default=4, dest="n_train", help="training scans per category (default 4)")
    p.add_argument("--good", type=int, default=15, dest="n_good", help="good test scans per category (default 15)")
    p.add_argument("--defective", type=int, default=15, dest="n_defective",
                   help="defective test scans per category, cycling through the defect types (default 15)")
    p.add_argument("--depths", nargs="+", type=float, metavar="PERCENT",
                   help="defect-size sweep: defect depths in %% of the part's size (e.g. 0.3 0.5 1 2 3); the defective "
                        "scans go through every (type, depth) pair in turn")
    p.add_argument("--workers", type=int, help="processes (default: up to 2); the output does not depend on it")
    p.add_argument("--corpus", type=int, metavar="N",
                   help="instead of the benchmark: N procedural parts for `edgead pretrain` (plates, channels, "
                        "shafts, housings, flanges; never the benchmark's categories), --points points each")


def main(args: argparse.Namespace) -> int:
    if args.corpus is not None:
        meta = generate_corpus(args.out, args.corpus, args.seed, args.points)
        print(f"wrote {meta['parts']} parts to {args.out}: " + ", ".join(f"{n} {f}s" for f, n in
                                                                         meta["families"].items()))
        return 0
    generate(args.out, seed=args.seed, track=args.track, categories=args.categories, points=args.points,
             n_train=args.n_train, n_good=args.n_good, n_defective=args.n_defective,
             depths=None if args.depths is None else [d / 100 for d in args.depths], workers=args.workers,
             progress=True)
    return 0
