"""Embedding edgead in a machine's own control loop: no service, no sockets, one ``detect`` call per part.

The loop waits for a part, scans it, decides, and drives the reject gate. Here the "scanner" is the synthetic
part generator and the gate is a print; on a line they would be the camera SDK and a digital output.

    python examples/controller.py [--engine engines/demo] [--threshold calibration/demo_threshold.json] [--parts 6]
"""

from __future__ import annotations

import argparse
import time

from edgead import EdgeDetector
from edgead.tools.demo import ENGINE, THRESHOLD, demo_kinds, demo_scan


def control_loop(det: EdgeDetector, parts, gate) -> list[bool]:
    """For each (name, points) part: detect, then open the reject gate for anomalous ones. Returns the decisions."""
    decisions = []
    for name, points in parts:
        try:
            result = det.detect(points)
        except ValueError as exc:  # an unusable scan or one that cannot be judged (NotInspected): never a pass
            print(f"{name}: not inspected ({exc}); rejecting")
            gate(True)
            decisions.append(True)
            continue
        reject = not result.passed  # only a judged part under a set threshold passes
        where = ""
        if reject:
            hot = points[result.point_scores > det.threshold]
            where = " defect near ({:.1f}, {:.1f}, {:.1f}) mm".format(*hot.mean(0))
        print(f"{name}: score {result.score:.3f} in {result.timings_ms['total']:.0f} ms -> "
              f"{'REJECT' + where if reject else 'pass'}")
        gate(reject)
        decisions.append(reject)
    return decisions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", default=str(ENGINE))
    p.add_argument("--threshold", default=str(THRESHOLD), help="number or calibration file")
    p.add_argument("--parts", type=int, default=6)
    args = p.parse_args()
    det = EdgeDetector.load(args.engine, threshold=args.threshold)
    parts = ((f"part{i}-{kind}", demo_scan(kind, seed=3, index=i).points)
             for i, kind in enumerate(demo_kinds(args.parts)))
    t0 = time.perf_counter()
    decisions = control_loop(det, parts, gate=lambda reject: None)
    print(f"{sum(decisions)} of {len(decisions)} parts rejected in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
