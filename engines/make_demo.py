"""Rebuild the demo engine (``engines/demo``, a ``template`` run directory) and its threshold calibration
(``calibration/demo_threshold.json``) from synthetic parts. Deterministic: ``python engines/make_demo.py``.

The threshold is F1-optimal over held-out synthetic scans (good and defective, a seed the demo does not replay).
"""

from __future__ import annotations

import json
import shutil

from edgead.calibrate import calibrate_threshold
from edgead.detector import EdgeDetector
from edgead.stream.demo import CALIBRATION_SEED, ENGINE, THRESHOLD, demo_kinds, demo_scan, train_scans
from edgead.train import train

N_CALIBRATION = 30


def main() -> None:
    shutil.rmtree(ENGINE, ignore_errors=True)
    train("template", train_scans(), ENGINE)
    det = EdgeDetector.load(ENGINE)
    scans = [(kind, demo_scan(kind, CALIBRATION_SEED, i).points) for i, kind in enumerate(demo_kinds(N_CALIBRATION))]
    doc = calibrate_threshold(det, [p for k, p in scans if k == "good"], [p for k, p in scans if k != "good"])
    doc["engine"] = "engines/demo"
    THRESHOLD.parent.mkdir(exist_ok=True)
    THRESHOLD.write_text(json.dumps(doc, indent=2))
    print(f"wrote {ENGINE} and {THRESHOLD}: threshold {doc['threshold']:.3f}, F1 {doc['f1']:.2f}, recall "
          f"{doc['recall']:.2f}, false alarms {doc['far_measured']:.2f}")


if __name__ == "__main__":
    main()
