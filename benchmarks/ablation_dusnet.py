"""DUS-Net ablations on the synthetic benchmark: the direction of the paper's Table 5 and Table 8, plus the
noise-free vs noisy (paper) inference and the template baseline.

    python benchmarks/ablation_dusnet.py --quick                 # minutes: 2 categories, short training
    python benchmarks/ablation_dusnet.py --steps 300 --docs docs/dusnet.md

Variants (each trained on the category's 4 normal scans, evaluated with `edgead.evaluate`):
  ours            Noise-Gen + Down-Net + Up-Net, the preset's gamma, noise-free inference (the shipped detector)
  noisy-infer     the same weights, Noise-Gen applied to the test patches as in the paper (seeded)
  w/o Noise-Gen   trained with alpha = beta = 0                                (Table 5, M_w/o N)
  w/o Up-Net      the same weights as ours, scored against the Down-Net's centres (Table 5, M_w/o U)
  Down-Net->FPS   Up-Net trained and run on the FPS centres                     (Table 5, M_replace D)
  gamma 1         up-sampling rate 1                                             (Table 8)
  template        the golden-sample baseline
With --quick the cpu preset runs with half the groups (G 128, thin 8192).
Results (mean O-/P-AUROC over categories, per track) go to stdout, ``--json``, and, with ``--docs``, between the
ablation markers of that markdown file.
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
from edgead.formats.dataset import find_categories, load_test, load_train
from edgead.formats.rundir import is_run_dir, read_run
from edgead.models import load_graph
from edgead.models.dusnet import noise_gen
from edgead.runtime import EdgeDetector
from edgead.tools.evaluate import balanced_subset, category_report, report, run_category
from edgead.tools.synth import generate
from edgead.train import TrainOptions, train
from edgead.train import dusnet as dus_train

START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def detector(run: Path, mode: str) -> EdgeDetector:
    """A run directory with the network run as ``mode``: "clean" (shipped), "noisy" (paper) or "centres"."""
    loaded = read_run(run)
    pipe = build_pipeline(loaded.kind, loaded.pipeline, loaded.arrays)
    model = load_graph(loaded)
    cfg = dus_train.TrainConfig(**loaded.doc["train"]["config"])
    gen = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def runner(feeds):
        p, c = torch.from_numpy(feeds["patches"])[None], torch.from_numpy(feeds["centers"])[None]
        if mode == "noisy":
            p, c = noise_gen(p, c, cfg.alpha, cfg.beta, gen)
        centers = model.centers(p, c)
        out = centers if mode == "centres" else model.up(centers)
        return {"recon": out[0].numpy()}

    return EdgeDetector(pipe, runner, backend="torch", name=f"dusnet-{mode}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/edgead_synth"), help="synth root (made if missing)")
    ap.add_argument("--tracks", nargs="+", default=["full", "scan"])
    ap.add_argument("--categories", nargs="+", help="default: all (quick: bottle, l_bracket)")
    ap.add_argument("--steps", type=int, help="training steps per stage (default: the cpu preset's; quick: 60)")
    ap.add_argument("--max-test", type=int, help="test samples per category (quick: 12)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgead_ablation"), help="run directories")
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--docs", type=Path, help="markdown file whose ablation section is replaced by the table")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.categories = args.categories or ["bottle", "l_bracket"]
        args.steps = args.steps or 60
        args.max_test = args.max_test or 12

    for track in args.tracks:
        if not (args.data / track).exists():
            generate(args.data / track, seed=0, track=track, categories=args.categories,
                     points=20_000 if args.quick else 50_000)
    cats = [Path(c).name for c in find_categories(args.data / args.tracks[0])]
    cats = [c for c in cats if not args.categories or c in args.categories]
    base = dus_train.preset("cpu")
    if args.quick:  # half the groups: the directions of the ablations, at half the cost
        base = replace(base, pipeline=replace(base.pipeline, groups=base.pipeline.groups // 2, thin=8192))
    trained = {"ours": base, "w/o Noise-Gen": replace(base, train=replace(base.train, alpha=0.0, beta=0.0)),
               "Down-Net->FPS": replace(base, arch=replace(base.arch, down_net=False)),
               "gamma 1": replace(base, arch=replace(base.arch, gamma=1))}
    evals = [("template", "template", ""), ("ours", "ours", "clean"), ("noisy-infer", "ours", "noisy"),
             ("w/o Up-Net", "ours", "centres"), ("w/o Noise-Gen", "w/o Noise-Gen", "clean"),
             ("Down-Net->FPS", "Down-Net->FPS", "clean"),
             ("gamma 1", "gamma 1", "clean")]
    runs: dict[str, dict] = {name: {t: [] for t in args.tracks} for name, _, _ in evals}
    t0 = time.time()
    for cat in cats:
        clouds = load_train(args.data / args.tracks[0] / cat)
        tests = {t: balanced_subset(load_test(args.data / t / cat), args.max_test) for t in args.tracks}
        dirs = {}
        for name, trained_as, mode in evals:
            if trained_as not in dirs:
                dirs[trained_as] = fit(trained_as, trained.get(trained_as), clouds, args.work / cat, args.steps)
            det = EdgeDetector.load(dirs[trained_as]) if mode in ("", "clean") else detector(dirs[trained_as], mode)
            for track in args.tracks:
                runs[name][track].append(run := run_category(det, cat, tests[track]))
                m = category_report(run)
                print(f"[{time.time() - t0:6.0f}s] {cat} {track:4s} {name:14s} O-AUROC {m['o_auroc']:.3f} "
                      f"P-AUROC {m['p_auroc']:.3f}", flush=True)

    results = {name: {t: report(_Named(name), rs, args.data / t)["mean"] for t, rs in tr.items()}
               for name, tr in runs.items()}
    steps = f"{args.steps} + {args.steps}" if args.steps else f"{base.train.steps_down} + {base.train.steps_up}"
    table = format_table(results, args.tracks, cats, steps, args.max_test, base)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.docs:
        text = args.docs.read_text()
        a, b = text.index(START) + len(START), text.index(END)
        args.docs.write_text(text[:a] + "\n" + table + "\n" + text[b:])


def fit(name: str, setting, clouds, work: Path, steps: int | None) -> Path:
    """Train one variant (``setting`` None: the template baseline) unless its run directory is complete."""
    out = work / name.replace("/", "").replace(" ", "_").replace(">", "")
    if not is_run_dir(out):
        opts = TrainOptions(steps=steps, progress=False)
        if setting is None:
            train("template", clouds, out, opts)
        else:
            dus_train.train(clouds, out, opts, setting)
    return out


class _Named:
    """The bits of a detector that :func:`edgead.tools.evaluate.report` reads."""

    def __init__(self, name: str):
        self.name, self.backend, self.model_hash = name, "", ""


def format_table(results: dict, tracks: list[str], cats: list[str], steps: str, max_test: int | None, base) -> str:
    head = "| variant | " + " | ".join(f"{t}: O-AUROC | {t}: P-AUROC" for t in tracks) + " |"
    cfg = base.pipeline
    lines = [f"Categories: {', '.join(cats)}; G={cfg.groups}, K={cfg.group_size}, thin={cfg.thin}; "
             f"{steps} Down-Net + Up-Net steps; {max_test or 'all'} test scans per category.", "", head,
             "|---" * (1 + 2 * len(tracks)) + "|"]
    for name, tr in results.items():
        cells = []
        for t in tracks:
            cells += [f"{tr[t][m]:.3f}" if tr[t][m] is not None else "-" for m in ("o_auroc", "p_auroc")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
