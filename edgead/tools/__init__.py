"""What the command line uses on top of the library: the synthetic benchmark (``synth``), evaluation
(``evaluate``, ``metrics``), batch prediction (``predict``), the heat-map figures both draw (``figures``),
benchmarking (``bench``), line calibration (``calibrate``) and the demo (``demo``).

May import anything in edgead; nothing in the serving side (formats, ops, detectors, runtime, stream) or in models,
train and export imports it.
"""
