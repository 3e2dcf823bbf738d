"""edgead: streaming edge library for 3D anomaly detection on factory lines."""

from edgead.detector import DetectionResult, EdgeDetector

__version__ = "0.1.0"
__all__ = ["DetectionResult", "EdgeDetector", "__version__"]
