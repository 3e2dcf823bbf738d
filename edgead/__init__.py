"""edgead: streaming edge library for 3D anomaly detection on factory lines.

``EdgeDetector.load(path).detect(points)`` is the library; ``edgead`` (``edgead.cli``) the command line. The
package layout and the one-way rule between its parts: docs/architecture.md.
"""

from edgead.detectors import NotInspected
from edgead.runtime import DetectionResult, EdgeDetector

__version__ = "0.2.0"
__all__ = ["DetectionResult", "EdgeDetector", "NotInspected", "__version__"]
