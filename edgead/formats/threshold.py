"""Threshold calibrations: ``edgead calibrate threshold`` writes them, ``serve --threshold FILE`` and
``EdgeDetector.load(..., threshold=FILE)`` read them.

A threshold means something only for the model it was calibrated on, so the file records that model's hash and is
refused for any other (a retrained or re-exported model scores differently).
"""

from __future__ import annotations

from pathlib import Path

from edgead.formats.digest import read_json, write_json

FORMAT = "edgead-threshold/1"


def write_threshold(path: Path, doc: dict) -> None:
    """``doc``: at least ``threshold`` (float) and ``model_hash`` (the model it was calibrated on)."""
    if "threshold" not in doc or not doc.get("model_hash"):
        raise ValueError("a threshold calibration needs a threshold and the model_hash it was calibrated on")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), {"format": FORMAT, **doc})


def read_threshold(path: Path, model_hash: str) -> float:
    """The threshold in ``path``, refused unless it was calibrated on the model with ``model_hash``."""
    path = Path(path)
    doc = read_json(path, "threshold calibration file")
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: threshold file format {doc.get('format')!r}, expected {FORMAT!r} (it does not say "
                         "which model it was calibrated on): run `edgead calibrate threshold` again")
    if not doc.get("model_hash"):
        raise ValueError(f"{path}: does not record the model it was calibrated on; run `edgead calibrate threshold` "
                         "again")
    if doc.get("model_hash") != model_hash:
        raise ValueError(f"{path}: calibrated for model {str(doc.get('model_hash'))[:16]}..., not for this model "
                         f"{model_hash[:16]}...; a threshold only holds for its own model: run `edgead calibrate "
                         "threshold` with this engine")
    threshold = doc.get("threshold")
    if type(threshold) not in (int, float) or threshold != threshold:
        raise ValueError(f"{path}: threshold must be a number, got {threshold!r}")
    return float(threshold)
