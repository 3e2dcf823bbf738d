"""Whether a frame can be judged at all: the "not inspected" rule every detector applies after alignment.

A quality gate must not pass a part it did not see. Three checks, on the frame aligned to the detector's stored
reference (in the reference's own units, so one rule holds for every detector and backend):

1. **Points.** At least the model's ``min_points`` finite points (checked in ``EdgeDetector.detect``).
2. **Coverage.** The reference surface is cut into cubic cells of edge ``CELLS_ACROSS``-th of its largest extent
   (or twice the reference's point spacing, if that is larger: every reference cell then holds reference points);
   the frame must put a point into at least ``MIN_COVERAGE`` of the cells the reference occupies. A one-sided scan
   of a part covers a large share of them; a stuck sensor (one point repeated), a zeroed depth map or a few stray
   points cover a handful. Cells are coarse on purpose: coverage does not depend on how densely the sensor samples.
3. **Registration fit.** At least ``MIN_FITNESS`` of the frame's points (a stride subsample) must lie within
   ``FIT_TOLERANCE`` of the part's extent from the nearest reference point (or 2 reference point spacings, if that
   is larger: a point on the surface between sparse reference points fits) after alignment. Defects and sensor
   artefacts are a few percent of the points; a registration that failed, another part or an empty belt leave most
   points off the reference, and a confident score on them would mean nothing.

A frame that fails raises :class:`NotInspected` with the reason and the measured figures; the service turns it
into an error result (``status: "error"``, ``anomalous: nil``), never a pass. The constants are chosen wide of
what good parts measure on every track of the synthetic benchmark (``benchmarks/line_like.py``,
``docs/evaluation.md``), and they are fractions of the part, not tuned millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from edgead.ops import median_spacing, stride_subsample

CELLS_ACROSS = 25  # coverage cells: the reference's largest extent / 25
MIN_COVERAGE = 0.05  # share of the reference's cells the frame must reach (good one-sided scans: 0.11 and up)
FIT_TOLERANCE = 0.02  # of the reference's largest extent: a point this close to the reference fits
MIN_FITNESS = 0.5  # share of the frame's points that must fit
FIT_POINTS = 2048  # frame points the fit is measured on


class NotInspected(ValueError):
    """A frame the detector cannot judge (too few points, too little of the part seen, a registration that does not
    fit): never a pass. The message says why, e.g. ``32 points, the model needs at least 64``."""


@dataclass(frozen=True)
class Inspection:
    """What the rule measured on a frame that passed it."""

    coverage: float  # share of the reference's cells the frame reached
    fitness: float  # share of the frame's points within the fit tolerance of the reference


def cells_reached(points: np.ndarray, cell: float, lo: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Which of the reference's cubic cells ``floor(x / cell)`` (in float64) hold a point: ``occupied`` (X, Y, Z)
    bool marks the reference's cells in a box starting at cell ``lo`` (3,) int64. (N, 3) -> (C,) bool, one per
    occupied cell in row-major order. Linear in N, no sort (a np.unique of the frame's cells cost 10-30 ms)."""
    shape = occupied.shape
    code = np.zeros(len(points), np.int64)
    inside = np.ones(len(points), bool)
    for axis in range(3):
        i = np.floor(points[:, axis].astype(np.float64) / cell)
        np.subtract(i, lo[axis], out=i)
        inside &= (i >= 0) & (i < shape[axis])
        code = code * shape[axis] + np.where(inside, i, 0).astype(np.int64)
    seen = np.zeros(occupied.size, bool)
    seen[code[inside]] = True
    return seen[occupied.ravel()]


class ReferenceSurface:
    """A detector's reference cloud (R, 3), prepared once for the rule: its cells and a tree for the fit."""

    def __init__(self, reference: np.ndarray, tree: cKDTree | None = None):
        ref = np.asarray(reference, dtype=np.float32)
        if len(ref) < 3 or not np.isfinite(ref).all():
            raise ValueError("the inspection rule needs a finite reference cloud of at least 3 points")
        self.tree = tree if tree is not None else cKDTree(ref)  # the detector's own, where it has one
        self.extent = float(np.ptp(ref, axis=0).max())
        self.spacing = median_spacing(ref, self.tree)
        self.cell = max(self.extent / CELLS_ACROSS, 2 * self.spacing)
        codes = np.floor(ref.astype(np.float64) / self.cell).astype(np.int64)
        self.lo = codes.min(0)
        self.occupied = np.zeros(tuple(codes.max(0) - self.lo + 1), bool)  # <= ~26^3: cells >= extent / 25
        self.occupied[tuple((codes - self.lo).T)] = True
        self.tolerance = max(FIT_TOLERANCE * self.extent, 2 * self.spacing)

    def measure(self, aligned: np.ndarray) -> Inspection:
        """(N, 3) frame aligned to the reference -> its coverage and fitness, whether they pass or not."""
        coverage = float(cells_reached(aligned, self.cell, self.lo, self.occupied).mean())
        dist, _ = self.tree.query(aligned[stride_subsample(len(aligned), FIT_POINTS)], k=1)
        return Inspection(coverage, float((dist <= self.tolerance).mean()))

    def refusal(self, m: Inspection, n_points: int) -> str | None:
        """Why a frame of ``n_points`` points that measured ``m`` cannot be judged; None when it can."""
        if m.coverage < MIN_COVERAGE:
            return (f"{n_points} points reach {m.coverage:.0%} of the part's surface cells, at least "
                    f"{MIN_COVERAGE:.0%} must be seen (an empty or stuck frame, or too little of the part)")
        if m.fitness < MIN_FITNESS:
            return (f"the registration does not fit: {m.fitness:.0%} of the points lie near the reference "
                    f"(within {self.tolerance:.3g}), at least {MIN_FITNESS:.0%} must (another part, a "
                    "failed alignment, or mostly background)")
        return None

    def inspect(self, aligned: np.ndarray) -> Inspection:
        """(N, 3) frame aligned to the reference -> the figures, or NotInspected naming the check that failed."""
        m = self.measure(aligned)
        reason = self.refusal(m, len(aligned))
        if reason is not None:
            raise NotInspected(reason)
        return m
