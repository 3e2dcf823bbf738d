"""``edgead eval MODEL --data DIR``: anomaly-detection metrics and per-stage timing on test categories.

Per category (the Real3D-AD protocol): O-AUROC and O-AUPR rank the test scans by object score (label: defective);
P-AUROC and P-AUPR rank every point of every test scan of the category, pooled. Points the detector dropped (NaN
score) are left out. The mean is over the categories where a metric is defined (both classes present).
Timing is the median and 95th percentile of each stage of ``DetectionResult.timings_ms`` over all frames.

The number a line engineer asks first, the smallest defect caught: per category, the object-score threshold that
lets through at most ``far`` of the good test scans (1 % and 5 %), and the share of defective scans above it, per
defect type (from the file name, ``NNN_<type>``) and per defect depth (from the ``synth.json`` of an
``edgead synth`` data set).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgead.detectors import NotInspected
from edgead.formats.dataset import find_categories, load_test
from edgead.tools import figures, metrics
from edgead.tools.calibrate import f1_threshold

log = logging.getLogger(__name__)

METRICS = ("o_auroc", "o_aupr", "p_auroc", "p_aupr")
STAGES = ("preprocess", "network", "postprocess", "total")
FARS = (0.01, 0.05)  # false-alarm rates the detection rates are reported at
DEPTH_EDGES = (0.0025, 0.004, 0.006, 0.0085, 0.012, 0.017, 0.025, 0.035, 0.05, 0.07)  # defect depth bins (of size)


@dataclass
class Shown:
    """One scan kept for the heat-map plot."""

    name: str
    points: np.ndarray  # (N, 3)
    scores: np.ndarray  # (N,) float32, NaN for dropped points
    labels: np.ndarray  # (N,) uint8
    score: float


@dataclass
class CategoryRun:
    """Everything measured on one category: per-scan results and the pooled point scores."""

    name: str
    samples: list[dict] = field(default_factory=list)  # name, label, score, n_points, n_dropped, timings_ms,
    # and for defective scans their defect type and depth (a fraction of the part's size; None when unknown)
    point_scores: list[np.ndarray] = field(default_factory=list)
    point_labels: list[np.ndarray] = field(default_factory=list)
    shown: dict[int, Shown] = field(default_factory=dict)  # label -> highest-scoring scan of that label

    def object_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """-> labels (S,) int, object scores (S,) float. A scan the detector did not inspect (score None) is
        flagged, never passed: it ranks above every judged scan (their highest score + 1)."""
        scores = np.array([np.nan if s["score"] is None else s["score"] for s in self.samples], dtype=np.float64)
        judged = scores[np.isfinite(scores)]
        scores[np.isnan(scores)] = (judged.max() if len(judged) else 0.0) + 1.0
        return np.array([s["label"] for s in self.samples], dtype=np.int64), scores

    def point_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Pooled over the category with dropped (NaN) points removed. -> labels (P,) uint8, scores (P,) float32."""
        if not self.point_scores:  # no scan inspected
            return np.zeros(0, np.uint8), np.zeros(0, np.float32)
        labels, scores = np.concatenate(self.point_labels), np.concatenate(self.point_scores)
        keep = np.isfinite(scores)
        return labels[keep], scores[keep]


def balanced_subset(samples: list, n: int | None) -> list:
    """At most n test samples (``.label`` 0 or 1), the first n // 2 good and the first n - n // 2 defective ones
    (deterministic); all of them without n."""
    if not n:
        return samples
    good, bad = [s for s in samples if s.label == 0], [s for s in samples if s.label == 1]
    return good[: n // 2] + bad[: n - n // 2]


def defect_type(name: str) -> str:
    """The defect type in a test scan's name: ``NNN_<type>`` (Real3D-AD, ``edgead synth``), else "defect"."""
    m = re.fullmatch(r"\d+_(.+)", name)
    return m.group(1) if m else "defect"


def defect_depths(category_dir: Path) -> dict[str, float]:
    """Test scan name -> defect depth (fraction of the part's size) from the ``synth.json`` that ``edgead synth``
    writes beside its categories; {} for data without one."""
    path = Path(category_dir).parent / "synth.json"
    if not path.is_file():
        return {}
    samples = json.loads(path.read_text()).get("categories", {}).get(Path(category_dir).name, {}).get("samples", {})
    return {key.split("/", 1)[1]: info["defect"]["depth_rel"] for key, info in samples.items()
            if key.startswith("test/") and "depth_rel" in info.get("defect", {})}


def run_category(detector, name: str, samples, depths: dict[str, float] | None = None) -> CategoryRun:
    """Detect every test sample (``TestSample``-like: name, points, labels, label) of one category. ``depths``:
    defect depth per sample name, where known (:func:`defect_depths`)."""
    run = CategoryRun(name)
    depths = depths or {}
    for s in samples:
        entry = {"name": s.name, "label": int(s.label), "n_points": len(s.points)}
        if s.label:
            entry.update(defect=defect_type(s.name), depth=depths.get(s.name))
        run.samples.append(entry)
        try:
            res = detector.detect(s.points)
        except NotInspected as exc:  # never a pass: counted as flagged, its points left out of the point metrics
            log.warning("%s/%s: not inspected (%s); counted as flagged", name, s.name, exc)
            entry.update(score=None, status="not inspected", error=str(exc), timings_ms={})
            continue
        except ValueError as exc:
            raise ValueError(f"{name}/{s.name}: {exc}") from exc
        labels = np.asarray(s.labels, dtype=np.uint8)
        if labels.shape != res.point_scores.shape:
            raise ValueError(f"{name}/{s.name}: {len(labels)} point labels for {len(res.point_scores)} points")
        entry.update(score=res.score, n_dropped=res.n_dropped, timings_ms=res.timings_ms)
        run.point_scores.append(res.point_scores)
        run.point_labels.append(labels)
        best = run.shown.get(int(s.label))
        if best is None or res.score > best.score:
            run.shown[int(s.label)] = Shown(s.name, s.points, res.point_scores, labels, res.score)
    return run


def _metric(fn, labels, scores) -> float | None:
    """A metric, or None where it is undefined (a single class)."""
    try:
        return fn(labels, scores)
    except ValueError:
        return None


def depth_bin(depth: float | None) -> str | None:
    """The DEPTH_EDGES bin of a defect depth, named by its range in % of the part's size ("0.6-0.85")."""
    if depth is None:
        return None
    i = int(np.searchsorted(DEPTH_EDGES, depth, side="right"))
    lo = f"{100 * DEPTH_EDGES[i - 1]:g}" if i > 0 else "0"
    return f"{lo}-{100 * DEPTH_EDGES[i]:g}" if i < len(DEPTH_EDGES) else f">{lo}"


def detection_at_far(samples: list[dict], far: float) -> dict | None:
    """Detection rate at a fixed false-alarm rate: the threshold is the lowest object score that at most
    ``floor(far * n_good)`` good scans exceed (with fewer than 1 / far good scans: the highest good score, i.e. no
    false alarm at all); a defective scan is caught when its score is above it. Overall, by defect type and by
    depth bin. None without both good and defective scans."""
    def score(x: dict) -> float:  # a scan not inspected is flagged at every threshold
        return np.inf if x["score"] is None else x["score"]

    good = np.sort([score(x) for x in samples if x["label"] == 0])[::-1]
    bad = [x for x in samples if x["label"] == 1]
    if not len(good) or not bad:
        return None
    threshold = float(good[min(int(far * len(good)), len(good) - 1)])
    if not np.isfinite(threshold):  # more good scans not inspected than the rate allows: the highest judged one
        threshold = float(good[np.isfinite(good)].max()) if np.isfinite(good).any() else -np.inf

    def rate(group: list[dict]) -> float:
        return float(np.mean([score(x) > threshold for x in group]))

    groups: dict[str, dict[str, list]] = {"by_type": {}, "by_depth": {}}
    for x in bad:
        groups["by_type"].setdefault(x.get("defect", "defect"), []).append(x)
        if (b := depth_bin(x.get("depth"))) is not None:
            groups["by_depth"].setdefault(b, []).append(x)
    return {"threshold": threshold, "false_alarms": float(np.mean(good > threshold)), "n_good": len(good),
            "detection": rate(bad),
            **{key: {k: rate(v) for k, v in sorted(g.items(), key=lambda kv: _bin_order(kv[0]))}
               for key, g in groups.items()}}


def _bin_order(name: str) -> tuple[float, str]:
    """Depth bins in increasing order (types alphabetically)."""
    m = re.match(r">?([\d.]+)", name)
    return (float(m.group(1)) if m else math.inf, name)


def category_report(run: CategoryRun) -> dict:
    y, s = run.object_arrays()
    py, ps = run.point_arrays()
    total = [x["timings_ms"]["total"] for x in run.samples if "total" in x["timings_ms"]]
    return {
        "o_auroc": _metric(metrics.roc_auc, y, s), "o_aupr": _metric(metrics.average_precision, y, s),
        "p_auroc": _metric(metrics.roc_auc, py, ps), "p_aupr": _metric(metrics.average_precision, py, ps),
        "n_good": int((y == 0).sum()), "n_defective": int((y == 1).sum()),
        "points_per_frame": float(np.mean([x["n_points"] for x in run.samples])),
        "total_ms_median": float(np.median(total)) if total else math.nan,
        "n_not_inspected": sum(x["score"] is None for x in run.samples),
        "detection": {f"{far:g}": detection_at_far(run.samples, far) for far in FARS},
        "samples": run.samples,
    }


def mean_detection(cats: dict[str, dict]) -> dict:
    """Per false-alarm rate: the mean over categories of the detection rate, overall, by type and by depth bin
    (each over the categories where it is defined)."""
    out = {}
    for far in (f"{f:g}" for f in FARS):
        per = [c["detection"][far] for c in cats.values() if c["detection"][far] is not None]
        mean: dict = {"detection": float(np.mean([p["detection"] for p in per])) if per else None}
        for key in ("by_type", "by_depth"):
            names = sorted({k for p in per for k in p[key]}, key=_bin_order)
            mean[key] = {k: float(np.mean([p[key][k] for p in per if k in p[key]])) for k in names}
        out[far] = mean
    return out


def report(detector, runs: list[CategoryRun], data_dir) -> dict:
    """The whole evaluation as a JSON-able dict: per category, mean over categories, timing."""
    cats = {r.name: category_report(r) for r in runs}
    mean = {}
    for m in METRICS:
        vals = [c[m] for c in cats.values() if c[m] is not None]
        mean[m] = float(np.mean(vals)) if vals else None
    frames = [x for r in runs for x in r.samples]
    timing = {st: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
              for st in STAGES if (v := [x["timings_ms"][st] for x in frames if st in x["timings_ms"]])}
    return {
        "model": {"name": detector.name, "backend": detector.backend, "model_hash": detector.model_hash},
        "data": str(data_dir), "categories": cats, "mean": mean, "detection": mean_detection(cats), "timing_ms": timing,
        "points_per_frame": float(np.mean([x["n_points"] for x in frames])), "n_frames": len(frames),
    }


def run_all(detector, data_dir, progress: bool = False) -> list[CategoryRun]:
    """Every category under ``data_dir`` (a category directory or a root of categories); ``progress``: a bar per
    category, counting its scans."""
    cats = find_categories(Path(data_dir))
    if not cats:
        raise ValueError(f"{data_dir}: no test categories found")
    return [run_category(detector, Path(c).name, tqdm(load_test(c), desc=Path(c).name, unit="scan",
                                                      disable=not progress), defect_depths(c))
            for c in cats]


def evaluate(detector, data_dir) -> dict:
    """Evaluate a loaded detector (``EdgeDetector``) on a category directory or a root of categories."""
    return report(detector, run_all(detector, data_dir), data_dir)


def _fmt(x) -> str:
    return "    -" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_table(rep: dict) -> str:
    head = f"{'category':<20} {'O-AUROC':>7} {'O-AUPR':>7} {'P-AUROC':>7} {'P-AUPR':>7} {'good':>5} {'bad':>5} " \
           f"{'pts/frame':>10} {'ms/frame':>9}"
    lines = [head, "-" * len(head)]
    for name, c in rep["categories"].items():
        lines.append(f"{name[:20]:<20} " + " ".join(f"{_fmt(c[m]):>7}" for m in METRICS)
                     + f" {c['n_good']:>5} {c['n_defective']:>5} {c['points_per_frame']:>10.0f} "
                     f"{c['total_ms_median']:>9.1f}")
    lines += ["-" * len(head), f"{'mean':<20} " + " ".join(f"{_fmt(rep['mean'][m]):>7}" for m in METRICS), ""]
    refused = [f"{name}/{x['name']}" for name, c in rep["categories"].items() for x in c["samples"]
               if x["score"] is None]
    if refused:
        lines += [f"not inspected, counted as flagged (never passed): {len(refused)} scans: {', '.join(refused)}", ""]
    lines += format_detection(rep["detection"])
    lines.append("timing (ms per frame): " + ", ".join(f"{st} {t['median']:.1f} median / {t['p95']:.1f} p95"
                                                       for st, t in rep["timing_ms"].items()))
    m = rep["model"]
    lines.append(f"model {m['name']} ({m['backend']}, {m['model_hash']}), {rep['n_frames']} frames, "
                 f"{rep['points_per_frame']:.0f} points/frame")
    return "\n".join(lines)


def format_detection(detection: dict) -> list[str]:
    """Detection rate at each false-alarm rate (mean over categories): overall, by defect type, by depth."""
    lines = []
    for key, title in (("by_type", "defect type"), ("by_depth", "depth, % of part")):
        cols = list(dict.fromkeys(k for d in detection.values() for k in d[key]))
        if not cols:
            continue
        width = max(6, *map(len, cols))
        lines.append(f"{'detected, ' + title:<26}" + "".join(f"{c:>{width + 1}}" for c in [*cols, "all"]))
        for far, d in detection.items():
            vals = [d[key].get(c) for c in cols] + [d["detection"]]
            lines.append(f"{'  at ' + f'{100 * float(far):g} % false alarms':<26}"
                         + "".join(f"{_fmt(v).strip():>{width + 1}}" for v in vals))
    return lines + [""] if lines else []


def _thin_curve(x: np.ndarray, y: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    idx = np.unique(np.linspace(0, len(x) - 1, n).astype(np.int64))
    return x[idx], y[idx]


def plot(runs: list[CategoryRun], rep: dict, path: Path, threshold: float | None = None,
         max_categories: int = 3) -> None:
    """The evaluation on one page (PNG, JPEG, PDF, SVG by ``path``'s extension).

    Top row: every scan's object score per category against the threshold; object ROC with the operating point;
    point ROC; the confusion matrix at the operating point. Then, for the first ``max_categories`` categories, the
    heat maps (``edgead.tools.figures``: mm axes, threshold on the colour bar, ground truth outlined) of the
    highest-scoring defective scan (its clearest detection) and the highest-scoring good scan (the likeliest false
    alarm). ``threshold``: the operating point (a calibrated one); without it, the F1-optimal threshold on these
    very scans, which the figure says is optimistic.
    """
    plt = figures.pyplot()
    labels, scores = (np.concatenate(a) for a in zip(*(r.object_arrays() for r in runs), strict=True))
    if threshold is None and 0 < labels.sum() < len(labels):
        threshold, _ = f1_threshold(scores[labels == 0], scores[labels == 1])
        source = "F1-optimal on these scans: optimistic"
    else:
        source = "--threshold" if threshold is not None else "none: one class only"
    shown = [r for r in runs if r.shown][:max_categories]
    fig = plt.figure(figsize=(18, 4.4 * (1 + len(shown))), layout="constrained")
    grid = fig.add_gridspec(1 + len(shown), 4)
    _score_strip(fig.add_subplot(grid[0, 0]), runs, threshold)
    for col, kind in ((1, "object"), (2, "point")):
        _roc(fig.add_subplot(grid[0, col]), runs, rep, kind, threshold)
    _confusion(fig.add_subplot(grid[0, 3]), labels, scores, threshold, source)
    for row, r in enumerate(shown, start=1):
        _shown_row(fig, grid, row, r, threshold)
    m = rep["model"]
    fig.suptitle(f"{m['name']} ({m['backend']}) on {rep['data']}: mean O-AUROC {_fmt(rep['mean']['o_auroc'])}, "
                 f"P-AUROC {_fmt(rep['mean']['p_auroc'])}; operating point: threshold "
                 f"{'-' if threshold is None else f'{threshold:.4g}'} ({source})", fontsize=11)
    figures.save(fig, path)


def _score_strip(ax, runs: list[CategoryRun], threshold: float | None) -> None:
    """Each scan's object score, one line per category: good parts left of the threshold is what passing means."""
    for i, r in enumerate(runs):
        y, s = r.object_arrays()
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(s))
        for label, colour, marker in ((0, "tab:blue", "o"), (1, "tab:red", "x")):
            ax.scatter(s[y == label], i + jitter[y == label], c=colour, marker=marker, s=18,
                       label=("good" if label == 0 else "defective") if i == 0 else None)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    ax.set_yticks(range(len(runs)), [r.name for r in runs], fontsize=8)
    ax.set_ylim(-0.6, len(runs) - 0.4)
    ax.set(xlabel="object score (one mark per scan)", title="object scores vs the threshold")
    ax.legend(fontsize=7, loc="best")


def _roc(ax, runs: list[CategoryRun], rep: dict, kind: str, threshold: float | None) -> None:
    """The ROC curve of every category; on the object curves, the operating point of ``threshold``."""
    for r in runs:
        auc = rep["categories"][r.name][f"{kind[0]}_auroc"]
        if auc is None:
            continue
        y, s = r.object_arrays() if kind == "object" else r.point_arrays()
        fpr, tpr, _ = metrics.roc_curve(y, s)
        (line,) = ax.plot(*_thin_curve(fpr, tpr), label=f"{r.name} ({auc:.3f})", lw=1.2)
        if kind == "object" and threshold is not None:
            ax.plot((s[y == 0] > threshold).mean(), (s[y == 1] > threshold).mean(), "o", color=line.get_color(),
                    ms=7, mec="black")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    title = f"{kind}-level ROC (AUROC)" + (": dot = operating point" if kind == "object" and threshold else "")
    ax.set(title=title, xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")


def _confusion(ax, labels: np.ndarray, scores: np.ndarray, threshold: float | None, source: str) -> None:
    """Scans passed and flagged at the operating point, pooled over the categories."""
    flagged = scores > threshold if threshold is not None else np.zeros(len(scores), bool)
    counts = np.array([[np.sum((labels == t) & (flagged == f)) for f in (False, True)] for t in (0, 1)])
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max()), 1))
    names = [["passed", "false alarm"], ["missed", "caught"]]
    for t in (0, 1):
        for f in (0, 1):
            ax.text(f, t, f"{counts[t, f]}\n{names[t][f]}", ha="center", va="center", fontsize=11,
                    color="white" if counts[t, f] > counts.max() / 2 else "black")
    ax.set_xticks([0, 1], ["passed (score <= threshold)", "flagged (score > threshold)"], fontsize=8)
    ax.set_yticks([0, 1], [f"good ({counts[0].sum()})", f"defective ({counts[1].sum()})"], fontsize=8)
    at = "no threshold" if threshold is None else f"threshold {threshold:.4g}"
    ax.set_title(f"confusion matrix at {at}\n({source})", fontsize=9)


def _shown_row(fig, grid, row: int, r: CategoryRun, threshold: float | None) -> None:
    """Heat maps of a category's shown scans, both views each, on one colour scale (so the two compare)."""
    y, _ = r.object_arrays()
    scans = [(k, r.shown[k]) for k in (1, 0) if k in r.shown]
    why = {1: f"the highest-scoring of {int((y == 1).sum())} defective scans: its clearest detection",
           0: f"the highest-scoring of {int((y == 0).sum())} good scans: the likeliest false alarm"}
    cmap_norm = figures.score_norm(np.concatenate([sc.scores for _, sc in scans]), threshold)
    span = 4 // (2 * len(scans))  # one scan: each view spans two columns, so no quarter is left empty
    axes = []
    for j, (k, sc) in enumerate(scans):
        verdict = "" if threshold is None else (" > " if sc.score > threshold else " <= ") + f"{threshold:.3g}"
        outcome = "" if threshold is None else {(1, True): ", caught", (1, False): ", missed",
                                                (0, True): ", false alarm", (0, False): ", passed"}[
                                                    (k, sc.score > threshold)]
        title = f"{r.name}/{sc.name}: {'defective' if k else 'good'}, score {sc.score:.3g}{verdict}{outcome}\n{why[k]}"
        for v, view in enumerate(figures.VIEWS):
            col = (2 * j + v) * span
            ax = fig.add_subplot(grid[row, col:col + span])
            sc_plot = figures.heat_map(ax, sc.points, sc.scores, view, threshold, cmap_norm,
                                       truth=sc.labels if k else None, title=title if v == 0 else "")
            axes.append(ax)
    figures.colour_bar(fig, sc_plot, axes, threshold)


def _depth_centre(name: str) -> float:
    """A depth bin's centre in % of the part's size (geometric; the open last bin: its lower edge)."""
    lo, _, hi = name.lstrip(">").partition("-")
    return float(lo) if not hi else math.sqrt(max(float(lo), 100 * DEPTH_EDGES[0] / 1.6) * float(hi))


def plot_detection(rep: dict, path: Path) -> bool:
    """The smallest defect caught: detection rate at each false-alarm rate against defect depth (mean over
    categories, and each category thinly at the first rate), and by defect type. False when the report has no
    defect depths (data without a ``synth.json``) and no types to show; nothing is written then."""
    plt = figures.pyplot()
    det = rep["detection"]
    if not any(d["by_depth"] or d["by_type"] for d in det.values()):
        return False
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    first = next(iter(det))
    for name, cat in rep["categories"].items():
        d = cat["detection"][first]
        if d and d["by_depth"]:
            ax.plot([_depth_centre(k) for k in d["by_depth"]], list(d["by_depth"].values()), lw=0.7, alpha=0.35,
                    label=f"{name} ({100 * float(first):g} %)")
    for (far, d), style in zip(det.items(), ("-o", "--s", ":^"), strict=False):
        if d["by_depth"]:
            ax.plot([_depth_centre(k) for k in d["by_depth"]], list(d["by_depth"].values()), style, color="k",
                    lw=1.8, label=f"mean, {100 * float(far):g} % false alarms")
    ax.set(ylim=(-0.02, 1.02), xlabel="defect depth, % of the part's size", ylabel="detection rate",
           title="defects caught at a fixed false-alarm rate")
    if ax.get_legend_handles_labels()[0]:
        ax.set_xscale("log")
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no defect depths in this data\n(edgead synth records them in synth.json)",
                ha="center", va="center", transform=ax.transAxes)
    types = list(dict.fromkeys(k for d in det.values() for k in d["by_type"]))
    width = 0.8 / max(1, len(det))
    for i, (far, d) in enumerate(det.items()):
        bx.bar(np.arange(len(types)) + i * width, [d["by_type"].get(t, 0.0) for t in types], width,
               label=f"{100 * float(far):g} % false alarms")
    bx.set_xticks(np.arange(len(types)) + width * (len(det) - 1) / 2, types, rotation=30, fontsize=8)
    bx.set(ylim=(0, 1.02), title="by defect type (mean over categories)")
    bx.legend(fontsize=7)
    fig.suptitle(f"{rep['model']['name']} on {rep['data']}")
    fig.tight_layout()
    figures.save(fig, path)
    return True
