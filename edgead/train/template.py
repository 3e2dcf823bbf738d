"""``template`` training: align the normal scans to the first (ICP with restarts), merge them and thin the union to
a reference of bounded size; store how well a new good scan fits (leave one out) so inference knows when to try
other starting poses, and the nearest-point grid (``ops.reference_grid``) that registration and scoring look
points up in, bounded to MAX_GRID_BYTES. numpy only: a runtime install can train it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgead import ops
from edgead.detectors import Kind
from edgead.detectors.inspection import ReferenceSurface
from edgead.detectors.template import Pipeline, TemplateConfig, align_to_first, alignment_points, capped_mean_square
from edgead.formats.rundir import write_run
from edgead.train.common import TrainOptions

MAX_REFERENCE = 100_000  # reference points kept after voxel thinning
MAX_GRID_BYTES = 64 << 20  # the nearest-point grid's memory per engine; its cells grow until it fits


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
    """Fit the reference cloud (at most ``max_reference`` points) and its grid; write the run directory ``out``
    (its description states the grid's size)."""
    config = config or TemplateConfig()
    aligned = align_to_first(clouds, config)
    reference = voxel_thin(np.concatenate(aligned), max_reference)
    config = replace(config, fit_tolerance=fit_tolerance(aligned, config, max_reference))
    grid = ops.reference_grid(reference, max_bytes=MAX_GRID_BYTES)
    pipeline = Pipeline(reference, ops.estimate_normals(reference), config, grid)
    meta, arrays = pipeline.state()
    write_run(out, kind=Kind.TEMPLATE.value, pipeline=meta, arrays=arrays,
              train={"n_clouds": len(clouds), "max_reference": max_reference, "grid": grid_record(grid)})
    return pipeline


def grid_record(grid: ops.NearestGrid) -> dict:
    """What the run's description says about the grid: cell edge (mm), candidates per cell, cells, memory."""
    return {"cell_mm": grid.cell, "candidates_per_cell": int(grid.candidates.shape[1]),
            "certified_cells": int((grid.cells[1:] != 0).sum()), "megabytes": round(grid.nbytes / 2**20, 2),
            "max_megabytes": MAX_GRID_BYTES >> 20}
