"""The export-time parity check: the exported graphs against the PyTorch reference on one frame, through the same
pipeline, network outputs and point scores both."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.formats.pointcloud import read_points

# An FP16 engine's point scores may differ from FP32's by this share of the largest reference score (in the units
# the scores are reported in) before export warns: well above FP16 rounding of a healthy graph, well below the
# score gap between a good part and a defect (docs/export.md, benchmarks/fp16_auroc.py).
FP16_SCORE_TOLERANCE = 0.05


def parity_frame(frame: Path | None, meta: dict, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 3) float32 sensor-unit frame for the check: ``frame``, or the run's stored reference shape."""
    if frame is not None:
        return np.asarray(read_points(frame), dtype=np.float32)
    ref = arrays.get("reference")
    if ref is None or len(ref) < 64:
        raise ValueError("this run stores no reference shape to check parity on; pass --frame SCAN")
    scale = float(meta["normalization"]["scale"])
    return (ref.astype(np.float64) * scale + 100.0).astype(np.float32)  # an arbitrary offset, as sensors give


def compare(ref_out: dict, ref_scores: np.ndarray, outputs: dict, pipeline, points, context) -> dict[str, float]:
    """Max/mean absolute differences of the network outputs and of the point scores (sensor units)."""
    scores = pipeline.postprocess(points, context, outputs)
    figures = {}
    for key, value in ref_out.items():
        diff = np.abs(outputs[key].astype(np.float64) - value.astype(np.float64))
        figures[f"{key}_max_abs"], figures[f"{key}_mean_abs"] = float(diff.max()), float(diff.mean())
    diff = np.abs(scores.astype(np.float64) - ref_scores.astype(np.float64))
    figures["score_max_abs"], figures["score_mean_abs"] = float(diff.max()), float(diff.mean())
    figures["score_max_ref"] = float(ref_scores.max())
    return figures


def out_of_tolerance(figures: dict[str, float], tolerance: float = FP16_SCORE_TOLERANCE) -> bool:
    return figures["score_max_abs"] > tolerance * max(figures["score_max_ref"], 1e-12)
