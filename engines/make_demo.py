"""Rebuild the demo engine (``engines/demo``, a ``template`` run directory) and its threshold calibration
(``calibration/demo_threshold.json``) from synthetic parts. Deterministic: ``python engines/make_demo.py``."""

from edgead.tools.demo import ENGINE, THRESHOLD, build_demo_engine

if __name__ == "__main__":
    doc = build_demo_engine(ENGINE, THRESHOLD)
    print(f"wrote {ENGINE} and {THRESHOLD}: threshold {doc['threshold']:.3f}, F1 {doc['f1']:.2f}, recall "
          f"{doc['recall']:.2f}, false alarms {doc['far_measured']:.2f}")
