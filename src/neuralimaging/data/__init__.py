"""Datasets on disk: prepared RAW/target pairs, splits and patch sampling.

The headline names are importable from the package (``from neuralimaging.data import Dataset``); their
modules are imported on first use (``lazy_loader``; the list is ``__init__.pyi``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
