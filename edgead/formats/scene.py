"""Scene calibrations: the conveyor plane and the region of interest above it (``edgead calibrate scene`` writes
them; ``serve --scene`` and ``sensor realsense --scene`` crop the part out of the raw sensor cloud with them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgead.formats.digest import read_json, write_json


@dataclass
class Scene:
    """The plane frame: ``origin`` on the plane, ``axes`` rows (u, v, n) with n the plane normal pointing to the
    side the parts are on. The ROI is the box ``lo <= (p - origin) @ axes.T <= hi`` in that frame (mm)."""

    origin: list[float]
    axes: list[list[float]]
    lo: list[float]
    hi: list[float]
    units: str = "mm"

    def to_plane(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) sensor -> (N, 3) plane-frame coordinates (u, v, height)."""
        return (points - np.asarray(self.origin, np.float32)) @ np.asarray(self.axes, np.float32).T


def crop(points: np.ndarray, scene: Scene) -> np.ndarray:
    """Keep the points inside the scene's ROI (above the plane, within its extent). (N, 3) -> (M, 3) float32.

    Non-finite rows never pass (their comparisons are false)."""
    q = scene.to_plane(np.asarray(points, dtype=np.float32))
    inside = ((q >= np.asarray(scene.lo, np.float32)) & (q <= np.asarray(scene.hi, np.float32))).all(1)
    return np.ascontiguousarray(points[inside], dtype=np.float32)


def read_scene(path) -> Scene:
    try:
        doc = read_json(Path(path), "scene calibration file")
        scene = Scene(**{k: doc[k] for k in ("origin", "axes", "lo", "hi")})
        if np.asarray(scene.axes).shape != (3, 3) or not all(len(v) == 3 for v in (scene.origin, scene.lo, scene.hi)):
            raise ValueError("origin, lo, hi need 3 numbers and axes 3x3")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a scene calibration file ({exc})") from exc
    return scene


def write_scene(path: Path, scene: Scene) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), asdict(scene))
