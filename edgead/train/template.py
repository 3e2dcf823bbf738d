"""``template`` training: align the normal scans to the first (ICP with restarts), merge them and thin the union to
a reference of bounded size; store how well a new good scan fits (leave one out) so inference knows when to try
other starting poses. numpy only: a runtime install can train it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgead import ops
from edgead.detectors import Kind
from edgead.detectors.inspection import ReferenceSurface
from edgead.detectors.template import Pipeline, TemplateConfig, alignment_points, capped_mean_square
from edgead.formats.rundir import write_run
from edgead.train.common import TrainOptions

MAX_REFERENCE = 100_000  # reference points kept after voxel thinning


def voxel_thin(points: np.ndarray, max_points: int) -> np.ndarray:
    """Replace the points in each cubic voxel by their mean, with the voxel size grown until at most ``max_points``
    remain. (N, 3) -> (M, 3) float32, M <= max_points. Averaging also cancels part of the sensor noise."""
    if len(points) <= max_points:
        return points.astype(np.float32)
    extent = float(np.ptp(points, axis=0).max())
    size = extent / np.sqrt(max_points)  # a surface of the bounding box's size: ~max_points voxels
    while True:
        keys = np.floor((points - points.min(0)) / size).astype(np.int64)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        if len(counts) <= max_points:
            break
        size *= max(1.02, np.sqrt(len(counts) / max_points))  # voxels on a surface scale as size^-2
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse.ravel(), points)
    return (sums / counts[:, None]).astype(np.float32)


def align_training(clouds: list[np.ndarray], config: TemplateConfig) -> list[np.ndarray]:
    """Every training cloud (finite points) aligned to the first, with restarts. list of (N_i, 3) -> same."""
    if not clouds:
        raise ValueError("template: no training clouds")
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    clouds = [c[np.isfinite(c).all(1)] for c in clouds]
    for i, c in enumerate(clouds):
        if len(c) < Pipeline.min_points:
            raise ValueError(f"template: training cloud {i} has {len(c)} finite points, need {Pipeline.min_points}")
    first = Pipeline(clouds[0], ops.estimate_normals(clouds[0]), replace(config, fit_tolerance=0.0))
    poses = [first.align(c, 4 * config.align_points) for c in clouds[1:]]  # offline: a finer final fit
    return [clouds[0]] + [(c @ r.T + t).astype(np.float32) for c, (r, t) in zip(clouds[1:], poses, strict=True)]


def fit_tolerance(aligned: list[np.ndarray], config: TemplateConfig, max_reference: int = MAX_REFERENCE,
                  factor: float = 2.0) -> float:
    """``factor`` times the worst leave-one-out residual (mm^2, as ``Pipeline.residual`` measures it): each aligned
    training scan against the reference built from the others, i.e. how well a new good scan fits. 0 (always
    restart) with a single training scan: nothing to leave out, and restarting costs only time."""
    worst = 0.0
    for i, c in enumerate(aligned if len(aligned) > 1 else []):
        others = voxel_thin(np.concatenate(aligned[:i] + aligned[i + 1:]), max_reference)
        sub = alignment_points(c, config.align_points)
        coarse = sub[ops.stride_subsample(len(sub), config.coarse_points)]
        cap = ReferenceSurface(others).tolerance
        worst = max(worst, capped_mean_square(ops.nearest_distance(coarse, others), cap))
    return factor * worst


def train(clouds: list[np.ndarray], out: Path, opts: TrainOptions | None = None,
          config: TemplateConfig | None = None, max_reference: int = MAX_REFERENCE) -> Pipeline:
    """Fit the reference cloud (at most ``max_reference`` points) and write the run directory ``out``."""
    config = config or TemplateConfig()
    aligned = align_training(clouds, config)
    reference = voxel_thin(np.concatenate(aligned), max_reference)
    config = replace(config, fit_tolerance=fit_tolerance(aligned, config, max_reference))
    pipeline = Pipeline(reference, ops.estimate_normals(reference), config)
    meta, arrays = pipeline.state()
    write_run(out, kind=Kind.TEMPLATE.value, pipeline=meta, arrays=arrays,
              train={"n_clouds": len(clouds), "max_reference": max_reference})
    return pipeline
