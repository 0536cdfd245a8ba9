from . import fan, localization, prnu
from .fan import FAN, ConstrainedConv2d
from .localization import localize
from .prnu import fingerprint, match, noise_residual, pce

__all__ = [
    "ConstrainedConv2d",
    "FAN",
    "fan",
    "fingerprint",
    "localization",
    "localize",
    "match",
    "noise_residual",
    "pce",
    "prnu",
]
