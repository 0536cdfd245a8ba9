"""The forensic analysis network (FAN) and the Bayar-Stamm constrained convolution.

The FAN classifies the processing history of an RGB patch (Korus & Memon, section 4.4 and supplement
Table 6): a constrained 5x5 residual-filter layer (Bayar & Stamm, "Constrained convolutional neural networks:
a new approach towards general purpose image manipulation detection", 2018), four 5x5 convolutions with
doubling widths (32 .. 256), leaky ReLU and 2x2 max pooling, a 1x1 convolution, global average pooling and
three fully connected layers. It has exactly 1,341,990 trainable parameters for 5 classes on RGB input.

The network returns **logits**; apply softmax once, outside (cross-entropy takes logits). The authors' first
toolbox applied softmax twice.

    >>> import torch
    >>> from neuralimaging.forensics.fan import FAN
    >>> fan = FAN()
    >>> fan(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.errors import InputError
from neuralimaging.layers import Conv2d
from neuralimaging.registry import register

__all__ = ["constrain_residual", "ConstrainedConv2d", "FAN", "LEAKY_SLOPE"]

LEAKY_SLOPE = 0.2
"""Negative slope of every leaky ReLU (TensorFlow's default, as in the authors' toolbox)."""

_EPS = 1e-6


def constrain_residual(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Project convolution kernels onto the Bayar-Stamm residual-filter constraint.

    For every 2-D kernel ``weight[o, i]`` the centre tap is set to ``-scale`` and the other taps are divided by
    their sum so that they add up to ``+scale``: the filter predicts the centre pixel from its neighbours and
    outputs the prediction error (Bayar & Stamm 2018, eq. 3). ``scale=100`` is the authors' toolbox variant.

    Args:
        weight: kernels ``(out, in, k, k)`` with odd ``k``.
        scale: magnitude of the centre tap (and of the sum of the others).

    Returns:
        The constrained kernels, same shape; differentiable w.r.t. ``weight`` (except the centre taps).
    """
    if weight.ndim != 4 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise InputError(f"constrained kernels must be (out, in, k, k) with odd k, got {tuple(weight.shape)}")
    k = weight.shape[-1]
    mask = torch.ones(k, k, dtype=weight.dtype, device=weight.device)
    mask[k // 2, k // 2] = 0
    rest = weight * mask
    total = rest.sum(dim=(-2, -1), keepdim=True)
    # Keep away from a zero sum without flipping its sign (the projection is singular there).
    safe = torch.where(total.abs() < _EPS, torch.full_like(total, _EPS).copysign(total), total)
    return scale * (rest / safe - (1 - mask))


class ConstrainedConv2d(nn.Conv2d):
    """A ``Conv2d`` whose kernels are residual filters (Bayar-Stamm), in training and evaluation alike.

    The stored ``weight`` is free; :meth:`forward` convolves with :func:`constrain_residual` of it, so the
    constraint always holds on the kernels that are actually used (:attr:`constrained_weight`). No bias.

    Args:
        in_channels: input channels.
        out_channels: number of residual filters.
        kernel_size: odd filter size (5 in the paper).
        scale: centre tap ``-scale``, the others sum to ``+scale`` (1 in the paper, 100 in the toolbox).
        padding: ``"same"`` (default) or an int.

    Shape:
        ``(N, in, H, W) -> (N, out, H, W)`` with ``"same"`` padding.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        kernel_size: int = 5,
        *,
        scale: float = 1.0,
        padding: str | int = "same",
    ) -> None:
        if kernel_size % 2 == 0:
            raise InputError(f"constrained convolution needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.scale = float(scale)

    def reset_parameters(self) -> None:
        # Positive off-centre taps: the initial filters are smooth predictors, so the layer starts as a
        # well-conditioned high-pass residual (the paper's "standard residual filter" initialization).
        with torch.no_grad():
            self.weight.uniform_(0.5, 1.5)

    @property
    def constrained_weight(self) -> torch.Tensor:
        """The kernels used in :meth:`forward`: centre ``-scale``, the others summing to ``+scale``."""
        return constrain_residual(self.weight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.constrained_weight, None)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale:g}"


class FAN(nn.Module):
    """The paper's forensic analysis network (supplement Table 6).

    Args:
        n_classes: number of manipulation classes (5 in the paper: native, sharpen, gaussian, jpeg, resample).
        in_channels: input channels (3 for RGB).
        constrained: start with the Bayar-Stamm constrained layer (the paper); ``False`` drops it.
        constraint_scale: 1 (paper) or 100 (the authors' toolbox).

    Shape:
        ``(N, in_channels, H, W)`` float in [0, 1] -> logits ``(N, n_classes)``. ``H`` and ``W`` at least 16
        (four 2x2 poolings).
    """

    def __init__(
        self,
        n_classes: int = 5,
        in_channels: int = 3,
        *,
        constrained: bool = True,
        constraint_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise InputError(f"the FAN needs at least 2 classes, got {n_classes}")
        self.n_classes = n_classes
        self.constrained = constrained
        self.residual = (
            ConstrainedConv2d(in_channels, in_channels, 5, scale=constraint_scale) if constrained else nn.Identity()
        )
        widths = (in_channels, 32, 64, 128, 256)
        self.features = nn.ModuleList(Conv2d(a, b, 5, padding=2) for a, b in zip(widths[:-1], widths[1:]))
        self.mix = Conv2d(256, 256, 1)
        self.fc1 = nn.Linear(256, 512)
        self.fc2 = nn.Linear(512, 128)
        self.fc3 = nn.Linear(128, n_classes)
        for layer in [*self.features, self.mix, self.fc1, self.fc2, self.fc3]:
            # MSRA (He) initialization, as in supplement Table 6.
            nn.init.kaiming_normal_(layer.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] < 16 or x.shape[-2] < 16:
            raise InputError(f"FAN input must be (N, C, H, W) with H, W >= 16, got {tuple(x.shape)}")
        x = self.residual(x)
        for conv in self.features:
            # Pool first: a leaky ReLU is strictly increasing, so it commutes with the max (same values, same
            # argmax, same gradients) and runs on a quarter of the pixels.
            x = F.leaky_relu(F.max_pool2d(conv(x), 2), LEAKY_SLOPE)
        x = F.leaky_relu(self.mix(x), LEAKY_SLOPE)
        x = x.mean(dim=(-2, -1))
        x = F.leaky_relu(self.fc1(x), LEAKY_SLOPE)
        x = F.leaky_relu(self.fc2(x), LEAKY_SLOPE)
        return self.fc3(x)


@register("fan", "fan", "forensic analysis network (Bayar-Stamm constrained conv + 4 conv blocks), 5 classes")
def _build_fan(**kwargs: object) -> FAN:
    return FAN(**kwargs)  # type: ignore[arg-type]
