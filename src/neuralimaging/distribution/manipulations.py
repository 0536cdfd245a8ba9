"""Photo manipulations the forensic network learns to tell apart, through one registry of names.

A specification string lists manipulations by name with an optional strength, or a strength range for
augmentation (sampled once per batch from a seeded generator)::

    >>> mods = parse("native,sharpen:1,gaussian,jpeg:70-90,resample:50")
    >>> [m.spec for m in mods]
    ['native', 'sharpen:1', 'gaussian:0.83', 'jpeg:70-90', 'resample:50']

Paper defaults (Korus & Memon, section 3.2; ``DEFAULT_MANIPULATIONS`` in the paper's class order):

- ``sharpen:S`` unsharp mask ``V - S * (L / 6) * V`` with ``L = [[1,4,1],[4,-20,4],[1,4,1]]`` on the V channel
  of HSV only (H and S are kept exactly: RGB is rescaled by ``V' / V``); S = 1 gives the paper's kernel.
- ``gaussian:SIGMA`` 5x5 Gaussian blur, sigma 0.83.
- ``jpeg:Q`` differentiable JPEG, quality 80, ``sin`` rounding, 4:4:4.
- ``resample:P`` bilinear down-sampling to P percent of the size, then bilinear back up (50 = 1:2).

Extras: ``awgn:SIGMA`` (additive white Gaussian noise, sigma in 8-bit levels, 5.1), ``gamma:G`` (``x^(1/G)``,
1.2), ``median:K`` (K x K median, 3, differentiable through its sort), ``native`` (identity).

Every manipulation maps ``(N, 3, H, W)`` in [0, 1] to the same shape in [0, 1] and is differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.distribution.jpeg import jpeg_compress
from neuralimaging.distribution.separable import replicate_filter_matrix, resize_matrix, separable_filter
from neuralimaging.errors import InputError

__all__ = [
    "DEFAULT_MANIPULATIONS",
    "MANIPULATIONS",
    "Manipulation",
    "Native",
    "Sharpen",
    "Gaussian",
    "JPEG",
    "Resample",
    "AWGN",
    "Gamma",
    "Median",
    "sharpen",
    "gaussian_blur",
    "resample",
    "awgn",
    "gamma",
    "median_filter",
    "parse",
    "available",
]

DEFAULT_MANIPULATIONS = "native,sharpen,gaussian,jpeg,resample"


# ----------------------------------------------------------------------------------------- functions


_SHARPEN_EPS = 1e-8
"""V at or below this is black: the sharpened pixel is grey V' (hue and saturation are undefined there)."""


def _sharpen_filter(v: torch.Tensor, strength: float, adjoint: bool = False) -> torch.Tensor:
    """``v - strength * conv(v, L / 6)`` with replicate borders (or its adjoint), on ``(N, 1, H, W)``.

    ``L = outer([1, 4, 1], [1, 4, 1]) - 36 delta``, so the filter is ``(1 + 6 s) v - (s / 6) B(v)`` with the
    separable ``B`` as two matrix products (the adjoint uses the transposed matrices).
    """
    h, w = v.shape[-2:]
    kw = {"dtype": v.dtype, "device": v.device}
    m_h, m_w = replicate_filter_matrix((1.0, 4.0, 1.0), h, **kw), replicate_filter_matrix((1.0, 4.0, 1.0), w, **kw)
    if adjoint:
        m_h, m_w = m_h.T, m_w.T
    return torch.add(v * (1.0 + 6.0 * strength), separable_filter(v, m_h, m_w), alpha=-strength / 6.0)


class _Sharpen(torch.autograd.Function):
    """:func:`sharpen` as one op with a hand-written backward (faster forward + backward on a CPU).

    The gradient is that of the composed formula under autograd: the clamps pass it on their closed range,
    ``amax`` shares it evenly between tied channels, black pixels (grey output) take it through V' only.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, strength: float) -> torch.Tensor:  # type: ignore[override]
        v = x.amax(dim=1, keepdim=True)
        sharpened = _sharpen_filter(v, strength)
        v_new = torch.clamp(sharpened, 0.0, 1.0)
        dark = v <= _SHARPEN_EPS
        denominator = v.masked_fill(dark, 1.0)
        ratio = v_new / denominator
        rescaled = torch.where(dark, v_new, x * ratio)
        out = torch.clamp(rescaled, 0.0, 1.0)
        if ctx.needs_input_grad[0]:
            ctx.strength = strength
            ctx.save_for_backward(x, v, v_new == sharpened, dark, denominator, ratio, out == rescaled)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, v, v_kept, dark, denominator, ratio, kept = ctx.saved_tensors
        g = grad * kept
        through_ratio = (g * x).sum(dim=1, keepdim=True)  # d out / d ratio, summed over the channels
        g_v_new = torch.where(dark, g.sum(dim=1, keepdim=True), through_ratio / denominator) * v_kept
        g_v = _sharpen_filter(g_v_new, ctx.strength, adjoint=True)
        g_v = g_v - (through_ratio * ratio / denominator).masked_fill_(dark, 0.0)
        ties = x == v
        g_v = g_v / ties.sum(dim=1, keepdim=True)
        return g * ratio.masked_fill(dark, 0.0) + ties * g_v, None


def sharpen(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Unsharp masking of the V channel of HSV, leaving H and S unchanged (the paper's kernel at strength 1).

    ``V' = clip(V - strength * conv(V, L / 6))``, ``L = [[1,4,1],[4,-20,4],[1,4,1]]``; RGB' = RGB * V' / V
    (grey V' where V = 0), which is HSV -> RGB with H and S kept.

    Args:
        x: ``(N, 3, H, W)`` in [0, 1].
        strength: >= 0.

    Returns:
        ``(N, 3, H, W)`` in [0, 1].
    """
    if strength < 0:
        raise InputError(f"sharpen: strength must be >= 0, got {strength:g}")
    with torch.autocast(x.device.type, enabled=False):
        return _Sharpen.apply(x, float(strength))


def gaussian_blur(x: torch.Tensor, sigma: float = 0.83, size: int = 5) -> torch.Tensor:
    """Gaussian blur with a normalized ``size x size`` kernel (replicate borders). ``(N, C, H, W)`` -> same.

    The kernel is separable, so the blur is two matrix products that hold the replicate borders
    (:func:`~neuralimaging.distribution.separable.separable_filter`, faster than a depthwise convolution).
    """
    if size < 1 or size % 2 == 0:
        raise InputError(f"gaussian blur: size must be a positive odd integer, got {size}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    h, w = x.shape[-2:]
    kw = {"dtype": x.dtype, "device": x.device}
    return separable_filter(x, replicate_filter_matrix(g, h, **kw), replicate_filter_matrix(g, w, **kw))


def resample(x: torch.Tensor, percent: float = 50.0) -> torch.Tensor:
    """Bilinear down-sampling to ``percent`` of the size, then bilinear up-sampling back to ``(H, W)``.

    Both resizings are linear along each axis, so the pair is one separable filter: ``F.interpolate``'s
    weights as two ``(H, H)`` and ``(W, W)`` matrices (faster forward + backward on a CPU than two
    ``F.interpolate`` calls, equal to float32 rounding).
    """
    h, w = x.shape[-2:]
    small_h, small_w = max(1, round(h * percent / 100.0)), max(1, round(w * percent / 100.0))
    kw = {"dtype": torch.float64, "device": x.device}
    m_h = resize_matrix(h, small_h, **kw) @ resize_matrix(small_h, h, **kw)
    m_w = resize_matrix(w, small_w, **kw) @ resize_matrix(small_w, w, **kw)
    return torch.clamp(separable_filter(x, m_h.to(x.dtype), m_w.to(x.dtype)), 0.0, 1.0)


def awgn(x: torch.Tensor, sigma: float = 5.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive white Gaussian noise with ``sigma`` in 8-bit levels (noise drawn on the CPU generator)."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return torch.clamp(x + noise * (sigma / 255.0), 0.0, 1.0)


def gamma(x: torch.Tensor, g: float = 1.2) -> torch.Tensor:
    """Gamma correction ``x^(1/g)`` (inputs floored at 1e-6 so the gradient stays finite)."""
    return torch.clamp(torch.clamp(x, min=1e-6) ** (1.0 / g), 0.0, 1.0)


def median_filter(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """``size x size`` median (odd size, replicate borders), differentiable through its sort."""
    n, c, h, w = x.shape
    padded = F.pad(x, (size // 2,) * 4, mode="replicate")
    patches = padded.unfold(2, size, 1).unfold(3, size, 1).reshape(n, c, h, w, size * size)
    return torch.sort(patches, dim=-1).values[..., (size * size) // 2]


# -------------------------------------------------------------------------------------------- modules


class Manipulation(nn.Module):
    """A manipulation with a strength (fixed, or a range sampled once per forward from ``generator``).

    Attributes:
        name: the registry name (``"jpeg"``).
        spec: the canonical specification (``"jpeg:80"``, ``"jpeg:70-90"``).
    """

    name: str = ""
    default: float | None = None
    integer: bool = False

    def __init__(
        self,
        strength: float | tuple[float, float] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if self.default is None:
            if strength is not None:
                raise InputError(f"manipulation {self.name!r} takes no strength, got {strength!r}")
            self.low = self.high = None
        else:
            low, high = strength if isinstance(strength, tuple) else (strength, strength)
            low = self.default if low is None else low
            high = self.default if high is None else high
            for value in (low, high):
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    raise InputError(f"{self.name}: strength must be a number, got {value!r}")
                if self.integer and value != int(value):
                    raise InputError(f"{self.name}: strength must be an integer, got {value:g}")
                self.check(float(value))
            if low > high:
                raise InputError(f"{self.name}: strength range {low:g}-{high:g} is empty (expected low <= high)")
            self.low, self.high = float(low), float(high)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def check(self, value: float) -> None:
        """Raise InputError for a strength out of range."""

    @property
    def spec(self) -> str:
        if self.low is None:
            return self.name
        if self.low == self.high:
            return f"{self.name}:{self.low:g}"
        return f"{self.name}:{self.low:g}-{self.high:g}"

    def strength(self) -> float:
        """The strength for this batch: fixed, or sampled uniformly from the range (integers inclusive)."""
        if self.low == self.high:
            return self.low
        if self.integer:
            return float(torch.randint(int(self.low), int(self.high) + 1, (1,), generator=self.generator).item())
        u = torch.rand(1, generator=self.generator, dtype=torch.float64).item()
        return self.low + u * (self.high - self.low)

    def extra_repr(self) -> str:
        return self.spec


class Native(Manipulation):
    """No manipulation (identity)."""

    name = "native"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Sharpen(Manipulation):
    """Unsharp mask on V of HSV, see :func:`sharpen`; strength >= 0 (1 = the paper's kernel)."""

    name = "sharpen"
    default = 1.0

    def check(self, value: float) -> None:
        if not 0 < value <= 10:
            raise InputError(f"sharpen: strength must be in (0, 10], got {value:g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sharpen(x, self.strength())


class Gaussian(Manipulation):
    """5x5 Gaussian blur, strength = sigma (0.83)."""

    name = "gaussian"
    default = 0.83

    def check(self, value: float) -> None:
        if not 0 < value <= 10:
            raise InputError(f"gaussian: sigma must be in (0, 10], got {value:g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, self.strength())


class JPEG(Manipulation):
    """Differentiable JPEG, strength = quality (80), ``sin`` rounding, 4:4:4 (the paper)."""

    name = "jpeg"
    default = 80.0
    integer = True

    def check(self, value: float) -> None:
        if not 1 <= value <= 100:
            raise InputError(f"jpeg: quality must be an integer in [1, 100], got {value:g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg_compress(x, int(self.strength()), rounding="sin", subsampling="4:4:4")


class Resample(Manipulation):
    """Bilinear down then up, strength = percent scale (50 = 1:2)."""

    name = "resample"
    default = 50.0

    def check(self, value: float) -> None:
        if not 0 < value < 100:
            raise InputError(f"resample: percent scale must be in (0, 100), got {value:g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resample(x, self.strength())


class AWGN(Manipulation):
    """Additive white Gaussian noise, strength = sigma in 8-bit levels (5.1)."""

    name = "awgn"
    default = 5.1

    def check(self, value: float) -> None:
        if not 0 < value <= 255:
            raise InputError(f"awgn: sigma must be in (0, 255] (8-bit levels), got {value:g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return awgn(x, self.strength(), self.generator)


class Gamma(Manipulation):
    """Gamma correction ``x^(1/G)``, strength = G (1.2)."""

    name = "gamma"
    default = 1.2

    def check(self, value: float) -> None:
        if not 0.1 <= value <= 10 or value == 1:
            raise InputError(f"gamma: G must be in [0.1, 10] and not 1, got {value:g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gamma(x, self.strength())


class Median(Manipulation):
    """K x K median filter, strength = K (odd, 3)."""

    name = "median"
    default = 3.0
    integer = True

    def check(self, value: float) -> None:
        if value < 3 or value > 15 or int(value) % 2 == 0:
            raise InputError(f"median: size must be an odd integer in [3, 15], got {value:g}")

    def strength(self) -> float:
        """The size for this batch: fixed, or an odd size drawn uniformly from the range."""
        odd = list(range(int(self.low), int(self.high) + 1, 2))
        if len(odd) == 1:
            return float(odd[0])
        return float(odd[int(torch.randint(len(odd), (1,), generator=self.generator).item())])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, int(self.strength()))


MANIPULATIONS: dict[str, type[Manipulation]] = {
    cls.name: cls for cls in (Native, Sharpen, Gaussian, JPEG, Resample, AWGN, Gamma, Median)
}


def available() -> list[str]:
    """The registered manipulation names."""
    return list(MANIPULATIONS)


def _number(text: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"manipulation {token!r}: strength {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"manipulation {token!r}: strength {text!r} is not finite")
    return value


def _split_range(text: str) -> tuple[str, str] | None:
    """``"70-90"`` -> ``("70", "90")``; None for one number (``"-5"``, ``"1e-3"``: a leading sign or an exponent's)."""
    for i in range(1, len(text)):
        if text[i] == "-" and text[i - 1] not in "eE":
            return text[:i], text[i + 1 :]
    return None


def parse(spec: str | Iterable[str], *, seed: int = 0) -> list[Manipulation]:
    """Manipulations from a specification like ``"native,sharpen:1,jpeg:70-90"``.

    Args:
        spec: comma-separated ``name[:strength|:low-high]`` (or a list of such tokens).
        seed: seed of the generators of random strengths and noise (one per manipulation: seed + index).

    Returns:
        One module per token, in order.

    Raises:
        InputError: empty spec, unknown name, bad or out-of-range strength, duplicates.
    """
    tokens = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec)]
    if not tokens or any(not t for t in tokens):
        raise InputError(f"manipulation list {spec!r} has an empty entry; expected e.g. {DEFAULT_MANIPULATIONS!r}")
    result: list[Manipulation] = []
    for index, token in enumerate(tokens):
        name, _, value = token.partition(":")
        name = name.strip().lower()
        cls = MANIPULATIONS.get(name)
        if cls is None:
            raise InputError(f"unknown manipulation {name!r}; expected one of: {', '.join(MANIPULATIONS)}")
        strength: float | tuple[float, float] | None = None
        value = value.strip()
        if value:
            bounds = _split_range(value)
            if bounds:
                strength = (_number(bounds[0], token), _number(bounds[1], token))
            else:
                strength = _number(value, token)
        elif ":" in token:
            raise InputError(f"manipulation {token!r}: empty strength after ':'")
        generator = torch.Generator().manual_seed(seed + index)
        module = cls(strength, generator=generator)
        if any(m.spec == module.spec for m in result):
            raise InputError(f"manipulation {module.spec!r} is listed twice")
        result.append(module)
    return result
