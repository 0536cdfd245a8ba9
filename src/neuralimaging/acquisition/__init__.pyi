from . import bayer, demosaic, isp, nip, pretrained, raw, virtual_camera
from .bayer import CFA_PATTERNS, from_rggb, normalize, to_rggb
from .demosaic import Menon2007, menon2007
from .isp import PIPELINES, PythonISP, develop
from .nip import NIP, DNet, INet, UNet, develop_raw, develop_tiled
from .raw import RawImage, read_raw
from .virtual_camera import synthesize

__all__ = [
    "CFA_PATTERNS",
    "DNet",
    "INet",
    "Menon2007",
    "NIP",
    "PIPELINES",
    "PythonISP",
    "RawImage",
    "UNet",
    "bayer",
    "demosaic",
    "develop",
    "develop_raw",
    "develop_tiled",
    "from_rggb",
    "isp",
    "menon2007",
    "nip",
    "normalize",
    "pretrained",
    "raw",
    "read_raw",
    "synthesize",
    "to_rggb",
    "virtual_camera",
]
