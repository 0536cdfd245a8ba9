"""The sharing channel: what a photo-sharing service does to an image (down-sampling, then JPEG).

The paper's channel (Korus & Memon, section 3.2) is 2x2 average pooling (1:2) followed by dJPEG at quality 50.
:class:`Channel` is differentiable with ``codec="differentiable"``; its real-codec twin (``codec="libjpeg"``)
uses Pillow's resize (box filter for ``avg``, bilinear for ``bilinear``) and Pillow's libjpeg at the same
settings, to test a trained FAN against what a real service does (evaluation only: no gradient).

    >>> channel = Channel.parse("down:2,jpeg:50")
    >>> channel(torch.rand(4, 3, 64, 64)).shape
    torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from neuralimaging.distribution.jpeg import (
    CODECS,
    ROUNDING_MODES,
    SUBSAMPLING_MODES,
    _check_choice,
    _check_image,
    jpeg_compress,
)
from neuralimaging.distribution.separable import box_downsample
from neuralimaging.errors import InputError

__all__ = ["DOWNSAMPLING_METHODS", "Channel", "downsample"]

DOWNSAMPLING_METHODS = ("avg", "bilinear", "none")


def _reduced_size(x: torch.Tensor, factor: int) -> tuple[int, int]:
    """``(H // f, W // f)`` of ``(..., H, W)``; InputError when either is 0."""
    h, w = x.shape[-2] // factor, x.shape[-1] // factor
    if h < 1 or w < 1:
        raise InputError(f"image of {x.shape[-2]}x{x.shape[-1]} is too small to down-sample by {factor}")
    return h, w


def downsample(x: torch.Tensor, factor: int = 2, method: str = "avg") -> torch.Tensor:
    """Down-sample ``(N, C, H, W)`` to ``(N, C, H//f, W//f)`` by an integer factor.

    Methods: ``avg`` (average pooling, the paper) or ``bilinear`` (anti-aliased, as Pillow's resize), both of
    the top-left ``f*(H//f) x f*(W//f)`` crop, or ``none`` (identity).
    """
    _check_choice(method, DOWNSAMPLING_METHODS, "down-sampling method")
    if method == "none" or factor == 1:
        return x
    h, w = _reduced_size(x, factor)
    if method == "avg":
        return box_downsample(x, factor)  # = F.avg_pool2d(x, factor), as two matrix products (faster on a CPU)
    x = x[..., : h * factor, : w * factor]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def _pillow_downsample(x: torch.Tensor, factor: int, method: str) -> torch.Tensor:
    """Pillow's 8-bit resize of each image (box or bilinear) to ``(H//f, W//f)`` of the top-left crop."""
    if method == "none" or factor == 1:
        return x
    h, w = _reduced_size(x, factor)
    resample = Image.Resampling.BOX if method == "avg" else Image.Resampling.BILINEAR
    pixels = torch.floor(torch.clamp(x.detach(), 0, 1).cpu().double() * 255 + 0.5).to(torch.uint8)
    pixels = pixels[:, :, : h * factor, : w * factor].permute(0, 2, 3, 1).numpy()
    out = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(p), "RGB").resize((w, h), resample)) for p in pixels]
    )
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


class Channel(nn.Module):
    """Down-sampling then JPEG compression, differentiable (dJPEG) or with the real codecs (Pillow).

    Args:
        downsample: integer factor >= 1 (2 = the paper's 1:2).
        method: ``avg`` (2x2 average pooling, the paper), ``bilinear`` or ``none``.
        quality: JPEG quality in [1, 100], or None for no compression.
        rounding: dJPEG rounding mode (``sin`` in the paper).
        subsampling: ``4:4:4`` (the paper) or ``4:2:0``.
        codec: ``differentiable`` (training) or ``libjpeg`` (Pillow resize + libjpeg; evaluation only).

    Shape:
        ``(N, 3, H, W) -> (N, 3, H // f, W // f)``, values in [0, 1].
    """

    def __init__(
        self,
        downsample: int = 2,
        method: str = "avg",
        quality: int | None = 50,
        rounding: str = "sin",
        subsampling: str = "4:4:4",
        codec: str = "differentiable",
    ) -> None:
        super().__init__()
        if isinstance(downsample, bool) or not isinstance(downsample, (int, np.integer)) or downsample < 1:
            raise InputError(f"channel down-sampling factor must be an integer >= 1, got {downsample!r}")
        self.factor = int(downsample)
        self.method = _check_choice(method, DOWNSAMPLING_METHODS, "down-sampling method")
        if quality is not None and (
            isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100
        ):
            raise InputError(f"channel JPEG quality must be an integer in [1, 100] or none, got {quality!r}")
        self.quality = None if quality is None else int(quality)
        self.rounding = _check_choice(rounding, ROUNDING_MODES, "rounding")
        self.subsampling = _check_choice(subsampling, SUBSAMPLING_MODES, "subsampling")
        self.codec = _check_choice(codec, CODECS, "codec")

    @property
    def spec(self) -> str:
        """The canonical specification, parseable by :meth:`parse`."""
        parts = []
        if self.method != "none" and self.factor > 1:
            parts.append(f"{'down' if self.method == 'avg' else 'bilinear'}:{self.factor}")
        if self.quality is not None:
            parts.append(f"jpeg:{self.quality}")
            defaults = {"rounding": "sin", "subsampling": "4:4:4"}
            for key, value in defaults.items():
                if getattr(self, key) != value and not (key == "rounding" and self.codec == "libjpeg"):
                    parts.append(f"{key}:{getattr(self, key)}")
        if self.codec != "differentiable":
            parts.append(f"codec:{self.codec}")
        return ",".join(parts) or "none"

    @classmethod
    def parse(cls, spec: str, **overrides: object) -> Channel:
        """A channel from a specification: comma-separated ``down:F`` (average pooling), ``bilinear:F``,
        ``jpeg:Q``, ``rounding:MODE``, ``subsampling:4:2:0``, ``codec:libjpeg``; ``none`` for the identity.

        Parts left out mean no down-sampling / no compression (``"jpeg:50"`` only compresses). Keyword
        ``overrides`` are applied last (e.g. ``codec="libjpeg"``).
        """
        kwargs: dict[str, object] = {"downsample": 1, "method": "none", "quality": None}
        text = spec.strip().lower()
        if not text:
            raise InputError("channel specification is empty; expected e.g. 'down:2,jpeg:50' or 'none'")
        if text != "none":
            for token in (t.strip() for t in text.split(",")):
                key, _, value = token.partition(":")
                if key in ("down", "avg", "bilinear"):
                    kwargs["method"] = "bilinear" if key == "bilinear" else "avg"
                    kwargs["downsample"] = _integer(value or "2", token)
                elif key == "jpeg":
                    kwargs["quality"] = _integer(value or "50", token)
                elif key in ("rounding", "subsampling", "codec"):
                    if not value:
                        raise InputError(f"channel part {token!r} needs a value")
                    kwargs[key] = value
                else:
                    raise InputError(
                        f"unknown channel part {token!r}; expected down:F, bilinear:F, jpeg:Q, rounding:MODE, "
                        "subsampling:S, codec:C or none"
                    )
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        if self.codec == "libjpeg":
            with torch.no_grad():
                y = _pillow_downsample(x, self.factor, self.method)
                if self.quality is not None:
                    y = jpeg_compress(y, self.quality, subsampling=self.subsampling, codec="libjpeg")
            return y
        y = downsample(x, self.factor, self.method)
        if self.quality is not None:
            y = jpeg_compress(y, self.quality, rounding=self.rounding, subsampling=self.subsampling)
        return y

    def extra_repr(self) -> str:
        return self.spec


def _integer(text: str, token: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"channel part {token!r}: {text!r} is not an integer") from None
