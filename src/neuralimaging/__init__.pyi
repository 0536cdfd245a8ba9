from . import acquisition, data, distribution, errors, experiments, forensics, io, layers, metrics, photos, registry
from .errors import InputError, NeuralImagingError

__version__: str

__all__ = [
    "InputError",
    "NeuralImagingError",
    "__version__",
    "acquisition",
    "data",
    "distribution",
    "errors",
    "experiments",
    "forensics",
    "io",
    "layers",
    "metrics",
    "photos",
    "registry",
]
