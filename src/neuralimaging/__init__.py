"""neuralimaging: the differentiable life of a photograph.

A camera develops RAW sensor data (``acquisition``), the photo is edited and shared through a lossy channel
(``distribution``), and a forensic analyst examines what arrives (``forensics``). ``experiments`` wires the
stages together and trains them end to end, after Korus & Memon, "Neural Imaging Pipelines - the Scourge or
Hope of Forensics?".
"""

from neuralimaging.errors import NeuralImagingError

__version__ = "0.1.0"
__all__ = ["NeuralImagingError", "__version__"]
