"""Heat maps of point scores that a line engineer can read, shared by ``edgead eval --plot`` and
``edgead predict --images``.

One style everywhere: two orthographic views of the part (top: x-y, front: x-z) with axes in mm and equal
scales; points coloured by score on a scale that turns from blue to yellow-red at the decision threshold (so
yellow-red is what the detector calls anomalous, as ``serve``'s regions do; those points are drawn larger), the
threshold marked on the colour bar; the ground-truth
defect outlined in black where it is known (evaluation), the detected regions boxed where they were found
(prediction). Hot points are drawn last, on top, and always kept when a large cloud is thinned for drawing.

matplotlib (the ``plot`` extra) is imported only when a figure is made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from edgead.stream.regions import point_spacing, voxel_components

VIEWS = ((0, 1, "top"), (0, 2, "front"))  # (horizontal axis, vertical axis, name)
AXES = "xyz"
MAX_DRAWN = 60_000  # points drawn per view; hot points are always among them


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_image_path(path: Path) -> None:
    """Refuse, before any long work, a file name matplotlib cannot write (no or an unknown extension). A ``.jpg``
    or ``.jpeg`` writes a JPEG."""
    plt = pyplot()
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(f"{path}: cannot write {'this image type' if suffix else 'an image without an extension'}; "
                         f"use one of {', '.join('.' + f for f in sorted(formats))}")


def save(fig, path: Path, dpi: int = 110) -> None:
    """Write ``fig`` in the format its extension names (JPEG at quality 92) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    fig.savefig(path, dpi=dpi, pil_kwargs={"quality": 92} if jpeg else None)
    pyplot().close(fig)


def score_norm(scores: np.ndarray, threshold: float | None):
    """(colour map, norm): light to mid blue up to ``threshold``, yellow through red above it, so a hot point
    stands out at a glance; without a threshold, viridis from 0."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, Normalize, TwoSlopeNorm

    top = float(np.nanmax(scores)) if np.isfinite(scores).any() else 1.0
    if threshold is None or not threshold > 0:
        return colormaps["viridis"], Normalize(0.0, max(top, 1e-9))
    cool = colormaps["Blues"](np.linspace(0.2, 0.65, 128))
    hot = colormaps["autumn_r"](np.linspace(0.15, 1.0, 128))
    return ListedColormap(np.r_[cool, hot]), TwoSlopeNorm(vmin=0.0, vcenter=threshold,
                                                           vmax=max(top, threshold * 1.05))


def _even(idx: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``idx``, evenly spaced (0 <= n <= len(idx))."""
    return idx[np.linspace(0, len(idx) - 1, n).astype(np.int64)] if n > 0 else idx[:0]


def drawn(scores: np.ndarray, threshold: float | None, max_points: int = MAX_DRAWN) -> np.ndarray:
    """Indices of the points to draw, lowest score first: at most ``max_points``, every hot point (above
    ``threshold``; evenly thinned only if they alone are more) and an even sample of the rest; NaN scores left out."""
    finite = np.flatnonzero(np.isfinite(scores))
    is_hot = scores[finite] > threshold if threshold is not None else np.zeros(len(finite), bool)
    hot, rest = finite[is_hot], finite[~is_hot]
    hot = _even(hot, min(len(hot), max_points))
    keep = np.r_[_even(rest, min(len(rest), max_points - len(hot))), hot]
    return keep[np.argsort(scores[keep], kind="stable")]


def outlines(points: np.ndarray, labels: np.ndarray, view: tuple[int, int]) -> list[np.ndarray]:
    """The ground-truth defect as polygons in a view: one convex hull per connected patch of labelled points
    (patches linked on a voxel grid of 3 point spacings, as regions are). -> list of (V, 2) arrays."""
    member = np.flatnonzero(labels > 0)
    if len(member) < 3:
        return []
    pts = points[member].astype(np.float64)
    comp = voxel_components(pts, max(3.0 * point_spacing(points), 1e-6))
    polygons = []
    for c in np.unique(comp):
        xy = pts[comp == c][:, list(view)]
        try:
            polygons.append(xy[ConvexHull(xy).vertices])
        except (QhullError, ValueError):  # a patch of 1-2 points or on a line in this view
            lo, hi = xy.min(0), xy.max(0)
            polygons.append(np.array([lo, [hi[0], lo[1]], hi, [lo[0], hi[1]]]))
    return polygons


def heat_map(ax, points: np.ndarray, scores: np.ndarray, view: tuple[int, int, str], threshold: float | None,
             cmap_norm, *, truth: np.ndarray | None = None, regions: list[dict] = (), title: str = ""):
    """One view of a scored scan on ``ax``; returns the scatter (for the colour bar).

    ``truth``: per-point labels, outlined in black; ``regions``: detected regions (``stream.regions`` dicts),
    boxed in black and numbered."""
    from matplotlib.patches import Polygon, Rectangle

    a, b, name = view
    keep = drawn(scores, threshold)
    cmap, norm = cmap_norm
    size = np.full(len(keep), np.clip(8000 / max(len(keep), 1), 0.3, 6.0))  # sparse scans get larger dots
    if threshold is not None:
        size[scores[keep] > threshold] *= 4  # hot points larger: a small defect on a dense scan still shows
    sc = ax.scatter(points[keep, a], points[keep, b], c=scores[keep], s=size, cmap=cmap, norm=norm, rasterized=True,
                    linewidths=0)
    if truth is not None:
        for i, poly in enumerate(outlines(points, truth, (a, b))):
            ax.add_patch(Polygon(poly, closed=True, fill=False, ec="black", lw=1.2, ls="--",
                                 label="ground-truth defect" if i == 0 else None))
    for i, r in enumerate(regions, start=1):
        lo, hi = np.asarray(r["bbox_min"]), np.asarray(r["bbox_max"])
        pad = 0.02 * float(np.ptp(points[:, [a, b]], axis=0).max())
        ax.add_patch(Rectangle((lo[a] - pad, lo[b] - pad), hi[a] - lo[a] + 2 * pad, hi[b] - lo[b] + 2 * pad,
                               fill=False, ec="black", lw=1.2, label="detected region" if i == 1 else None))
        ax.annotate(f"R{i}", (hi[a] + pad, hi[b] + pad), fontsize=8, fontweight="bold")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(f"{AXES[a]} (mm)")
    ax.set_ylabel(f"{AXES[b]} (mm)")
    ax.tick_params(labelsize=7)
    ax.set_title(f"{title}\n{name} view ({AXES[a]}-{AXES[b]})" if title else f"{name} view ({AXES[a]}-{AXES[b]})",
                 fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    return sc


def colour_bar(fig, scatter, axes, threshold: float | None):
    """The point-score colour bar beside ``axes``, the threshold marked on it."""
    bar = fig.colorbar(scatter, ax=axes, shrink=0.85, pad=0.01)
    bar.ax.tick_params(labelsize=7)
    if threshold is None:
        bar.set_label("point score (no threshold)", fontsize=8)
    else:
        bar.ax.axhline(threshold, color="black", lw=2)
        bar.set_label(f"point score (black line: threshold {threshold:.3g})", fontsize=8)
    return bar


def scan_figure(points: np.ndarray, scores: np.ndarray, threshold: float | None, title: str,
                regions: list[dict] = (), max_boxes: int = 5):
    """The figure of one scored scan (``edgead predict --images``): both views, the ``max_boxes`` regions with
    the highest scores boxed (R1 the highest)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    cmap_norm = score_norm(scores, threshold)
    boxed = sorted(regions, key=lambda r: -r["max_score"])[:max_boxes]
    for ax, view in zip(axes, VIEWS, strict=True):
        sc = heat_map(ax, points, scores, view, threshold, cmap_norm, regions=boxed)
    colour_bar(fig, sc, axes, threshold)
    if len(regions) > len(boxed):
        title += f" ({len(boxed)} of {len(regions)} regions boxed: the highest-scoring)"
    fig.suptitle(title, fontsize=10)
    return fig
