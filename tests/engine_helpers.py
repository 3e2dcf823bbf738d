"""Real detectors trained for a few steps and exported once per test session (shared by the export, runtime and
kernel tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.export import export_run
from edgead.train import TrainOptions, train

KINDS = ("dusnet", "r3dad")
PRESETS = {"dusnet": "tiny", "r3dad": "cpu"}
_CACHE: dict[str, tuple[Path, Path]] = {}


def part(n: int = 6000, seed: int = 0, bump: bool = False) -> np.ndarray:
    """(n, 3) float32 mm: a noisy ellipsoid shell at an offset, optionally with a bump (an anomaly)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    if bump:
        p *= 1 + 0.25 * np.exp(-((p - [1, 0, 0]) ** 2).sum(1) / 0.05)[:, None]
    return (p * [40, 25, 15] + [5, 0, 2] + rng.normal(scale=0.2, size=(n, 3))).astype(np.float32)


def trained_and_exported(root: Path, kind: str) -> tuple[Path, Path]:
    """(run_dir, engines_dir) of ``kind`` trained for 2 steps on 3 normal parts and exported as ONNX."""
    if kind not in _CACHE:
        run, out = root / f"run_{kind}", root / "engines"
        train(kind, [part(seed=s) for s in range(3)], run, TrainOptions(preset=PRESETS[kind], steps=2,
                                                                        progress=False))
        export_run(run, out, kind, "onnx")
        _CACHE[kind] = run, out
    return _CACHE[kind]
