"""neuralimaging: the differentiable life of a photograph.

A camera develops RAW sensor data (``acquisition``), the photo is edited and shared through a lossy channel
(``distribution``), and a forensic analyst examines what arrives (``forensics``). ``experiments`` wires the
stages together and trains them end to end, after Korus & Memon, "Neural Imaging Pipelines - the Scourge or
Hope of Forensics?".

The subpackages are attributes of the package (``neuralimaging.distribution.jpeg_compress``), imported on
first use (SPEC 1, ``lazy_loader``; the names are listed in ``__init__.pyi``, which type checkers read), so
``import neuralimaging`` stays cheap. The library logs to the ``neuralimaging`` logger and its children
(``logging``); it prints nothing.
"""

import logging

import lazy_loader as _lazy

__version__ = "0.1.0"

__getattr__, _dir, _names = _lazy.attach_stub(__name__, __file__)
__all__ = [*_names, "__version__"]


def __dir__() -> list[str]:
    return list(__all__)


logging.getLogger(__name__).addHandler(logging.NullHandler())
