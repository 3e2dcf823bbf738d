"""Patch-Gen (R3D-AD section 3.4, Algorithm 1): simulate bulges, sinks and damage on normal clouds for training.

Training-only, numpy. A random rotation is applied, a viewpoint is drawn on the surface of the normalised cube
[-1, 1]^3, the ``N = ratio * len(P)`` points nearest to it form the patch, and each patch point moves by
``S * normalize(P_n - P_v) * T`` (eq. 8) with T Gaussian (N, 3). ``normalize(P_n - P_v)`` points from the viewpoint
into the object, so a positive factor pushes a point away from the viewpoint (a sink) and a negative one pulls it
towards the viewpoint (a bulge). "Sorting T" (the paper's bulge/sink recipe) is read as: magnitudes |T| sorted in
decreasing order along the patch (nearest point to the viewpoint first, so the deformation peaks at the patch centre
and fades towards its rim) with one common sign; damage uses T as drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgead import ops

KINDS = ("bulge", "sink", "damage")


@dataclass
class PatchGenResult:
    clean: np.ndarray  # (N, 3) float32: the rotated normal cloud, the reconstruction target
    anomalous: np.ndarray  # (N, 3) float32: the same cloud with one simulated defect
    mask: np.ndarray  # (N,) bool: the points that moved
    kind: str
    viewpoint: np.ndarray  # (3,)


def cube_viewpoint(rng: np.random.Generator) -> np.ndarray:
    """(3,) a point drawn uniformly on the surface of the cube [-1, 1]^3."""
    v = rng.uniform(-1, 1, size=3)
    v[rng.integers(3)] = rng.choice([-1.0, 1.0])
    return v.astype(np.float32)


def displacement_factors(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """T of eq. 8, (n, 3) float32, rows ordered from the patch centre outwards. See the module docstring."""
    t = rng.standard_normal((n, 3)).astype(np.float32)
    if kind == "damage":
        return t
    sign = 1.0 if kind == "sink" else -1.0
    return sign * -np.sort(-np.abs(t), axis=0)


def patch_gen(points: np.ndarray, rng: np.random.Generator, ratio: float = 1 / 32, scale: float = 0.1,
              max_angle: float = np.pi, kind: str | None = None) -> PatchGenResult:
    """Algorithm 1 on one normalised cloud (N, 3). ``kind`` None draws bulge, sink or damage uniformly."""
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2:
        raise ValueError(f"patch_gen: points must have shape (N >= 2, 3), got {points.shape}")
    kind = kind or KINDS[rng.integers(len(KINDS))]
    if kind not in KINDS:
        raise ValueError(f"patch_gen: unknown defect kind {kind!r}; expected one of {', '.join(KINDS)}")
    clean = (points @ ops.random_rotation(rng, max_angle).T).astype(np.float32)
    view = cube_viewpoint(rng)
    n = max(1, int(round(ratio * len(points))))
    idx = np.argsort(np.linalg.norm(clean - view, axis=1), kind="stable")[:n]  # nearest first
    direction = clean[idx] - view
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    anomalous = clean.copy()
    anomalous[idx] += scale * direction * displacement_factors(rng, n, kind)
    mask = np.zeros(len(points), dtype=bool)
    mask[idx] = True
    return PatchGenResult(clean, anomalous, mask, kind, view)
