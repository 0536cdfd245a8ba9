"""Neural imaging pipelines (NIPs): INet, UNet and DNet, after Korus & Memon (supplement Tables 2-4).

Every NIP maps a normalized RGGB stack ``(N, 4, h, w)`` in [0, 1] (black/white normalized, white balanced;
channels R, G at (0, 1), G at (1, 0), B of the 2x2 RGGB cell) to RGB ``(N, 3, 2h, 2w)`` in [0, 1]. They are
fully convolutional and accept any even output size. Output clipping to [0, 1] passes gradients straight
through (the later version of the authors' toolbox).

Trainable parameter counts equal the paper's: INet 321, UNet 7,760,268, DNet 493,976.

Example::

    >>> from neuralimaging.acquisition import nip
    >>> model = nip.create("inet")
    >>> rgb = model(torch.rand(1, 4, 32, 32))   # doctest: +SKIP  -> (1, 3, 64, 64)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging import registry
from neuralimaging.acquisition.isp import GAMMAS, PythonISP
from neuralimaging.errors import InputError
from neuralimaging.layers import Conv2d

__all__ = [
    "NIP",
    "INet",
    "UNet",
    "DNet",
    "clip_ste",
    "mirror_pad_rggb",
    "ClipSTE",
    "bayer_to_rgb_weight",
    "GAMMA_NET",
    "fit_gamma_net",
    "check_options",
    "create",
    "names",
    "develop_tiled",
    "UNET_BASELINES",
    "develop_raw",
]

# A 1 -> 4 (tanh) -> 1 network fitted to x ** (1 / 2.2) on [0, 1]; INet uses it per colour channel
# (block-diagonal 3 -> 12 -> 3) as its initial gamma correction. Regenerate with ``fit_gamma_net()``;
# tests/acquisition/test_nip.py checks these constants against a fresh fit and against x ** (1 / 2.2).
GAMMA_NET: dict[str, list[float]] = {
    "w1": [7.320966881339945, 3.4960484420319466, 1.3340248610638543, 4.773641075163849],
    "b1": [0.6567792129925698, 0.4093719839982604, -0.5338750127180936, 0.5208095233730675],
    "w2": [0.45853339020269823, 0.1645249219152519, 0.492695504184548, 0.06684247479743444],
    "b2": [-0.023242458189686017],
}


def clip_ste(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Clip to ``[low, high]`` in the forward pass; identity gradient in the backward pass."""
    return x + (x.clamp(low, high) - x).detach()


class ClipSTE(nn.Module):
    """Module form of :func:`clip_ste` (clip to [0, 1], straight-through gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clip_ste(x)


def bayer_to_rgb_weight() -> torch.Tensor:
    """Weights ``(12, 4, 1, 1)`` of the fixed 1x1 convolution that, followed by ``pixel_shuffle(2)``, places
    each RGGB sample at its site in a zero-filled 3-channel mosaic (paper Table 2, first layer).

    ``pixel_shuffle`` reads output channel ``c`` at sub-pixel ``(dy, dx)`` from input channel
    ``4 c + 2 dy + dx``; the RGGB stack holds R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1).
    """
    weight = torch.zeros(12, 4, 1, 1)
    sites = {0: (0, 0, 0), 1: (1, 0, 1), 2: (1, 1, 0), 3: (2, 1, 1)}  # stack channel -> (rgb, dy, dx)
    for k, (c, dy, dx) in sites.items():
        weight[4 * c + 2 * dy + dx, k, 0, 0] = 1.0
    return weight


def _bilinear_weight() -> torch.Tensor:
    """The 5x5 demosaicing convolution ``(3, 3, 5, 5)`` initialized as bilinear interpolation."""
    g = torch.tensor([[0, 0.25, 0], [0.25, 1, 0.25], [0, 0.25, 0]])
    rb = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])
    weight = torch.zeros(3, 3, 5, 5)
    for c, kernel in enumerate((rb, g, rb)):
        weight[c, c, 1:4, 1:4] = kernel
    return weight


def fit_gamma_net(hidden: int = 4, gamma: float = 2.2, steps: int = 3000, seed: int = 0) -> dict[str, list[float]]:
    """Fit a ``1 -> hidden (tanh) -> 1`` network to ``x ** (1 / gamma)`` on [0, 1] (float64, Adam then LBFGS).

    The paper initializes INet's gamma layers from "a 2-layer network trained separately to approximate
    gamma correction" (Table 2, note 2). Returns lists ``w1 (hidden,)``, ``b1 (hidden,)``, ``w2 (hidden,)``,
    ``b2 (1,)``.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, 1025, dtype=torch.float64).unsqueeze(1)
    y = x ** (1 / gamma)
    w1 = (torch.rand(1, hidden, generator=gen, dtype=torch.float64) * 4 + 1).requires_grad_()
    b1 = (torch.rand(hidden, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    w2 = (torch.rand(hidden, 1, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    b2 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    params = [w1, b1, w2, b2]

    def loss_fn() -> torch.Tensor:
        return ((torch.tanh(x @ w1 + b1) @ w2 + b2 - y) ** 2).mean()

    adam = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        adam.zero_grad()
        loss_fn().backward()
        adam.step()
    lbfgs = torch.optim.LBFGS(params, lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    lbfgs.step(closure)
    return {
        "w1": w1.detach().flatten().tolist(),
        "b1": b1.detach().tolist(),
        "w2": w2.detach().flatten().tolist(),
        "b2": b2.detach().tolist(),
    }


def _fold_index() -> torch.Tensor:
    """Index ``(12, 4, 3, 3)`` into a flattened full-resolution kernel ``(3, 3, 5, 5)`` (plus a trailing zero
    at index 225) that turns "place samples, then 5x5 convolution" into one 3x3 convolution of the RGGB stack
    with 12 outputs (colour ``o``, sub-pixel ``(dy, dx)`` -> channel ``4 o + 2 dy + dx``, as pixel_shuffle)."""
    index = torch.full((12, 4, 3, 3), 225, dtype=torch.long)
    sites = {0: (0, 0, 0), 1: (1, 0, 1), 2: (1, 1, 0), 3: (2, 1, 1)}  # stack channel -> (rgb, sy, sx)
    for o in range(3):
        for dy in range(2):
            for dx in range(2):
                for k, (c, sy, sx) in sites.items():
                    for a in range(-1, 2):
                        for b in range(-1, 2):
                            u, v = 2 * a + sy - dy + 2, 2 * b + sx - dx + 2
                            if 0 <= u < 5 and 0 <= v < 5:
                                index[4 * o + 2 * dy + dx, k, a + 1, b + 1] = ((o * 3 + c) * 5 + u) * 5 + v
    return index


def mirror_pad_rggb(x: torch.Tensor) -> torch.Tensor:
    """Pad an RGGB stack ``(N, 4, h, w)`` by one pixel so that its mosaic is mirrored about its edge pixels
    (``reflect`` padding of 2 at full resolution, which keeps every site's colour): ``(N, 4, h + 2, w + 2)``.

    Mirroring the mosaic maps full-resolution row -1 to row 1 and -2 to 2: at half resolution, sites in the
    first row of a 2x2 cell are reflected and those in the second row replicated (and the other way round at
    the far edge); likewise for columns. Needs ``h, w >= 2``.
    """
    if min(x.shape[-2:]) < 2:
        raise InputError(f"mirror padding needs an RGGB stack of at least 2x2 pixels, got {tuple(x.shape[-2:])}")
    top = torch.stack([x[:, 0, 1], x[:, 1, 1], x[:, 2, 0], x[:, 3, 0]], 1).unsqueeze(2)
    bottom = torch.stack([x[:, 0, -1], x[:, 1, -1], x[:, 2, -2], x[:, 3, -2]], 1).unsqueeze(2)
    x = torch.cat([top, x, bottom], dim=2)
    left = torch.stack([x[:, 0, :, 1], x[:, 1, :, 0], x[:, 2, :, 1], x[:, 3, :, 0]], 1).unsqueeze(3)
    right = torch.stack([x[:, 0, :, -1], x[:, 1, :, -2], x[:, 2, :, -1], x[:, 3, :, -2]], 1).unsqueeze(3)
    return torch.cat([left, x, right], dim=3)


# -- INet's fused CPU kernel ---------------------------------------------------------------------------------
# INet's step is dominated by the full-resolution gamma MLP (1x1 3 -> 12, tanh, 1x1 12 -> 3): its hidden
# tensor (N x 12 x 2h x 2w, 63 MB for the paper's batch) makes every elementwise pass memory-bound, and tanh
# is slower than sigmoid on CPU. The fused path runs the MLP image by image (the hidden tensor of one
# image stays in the L2 cache) as matrix products (weights on the left, which MKL handles best), with
# tanh(a) = 2 sigmoid(2a) - 1 folded into the weights, biases as an extra constant row, and the colour
# interleaving (depth-to-space) done once, as four strided plane copies, between a channels-last folded
# convolution and the MLP. Figures against the einsum form: docs/benchmarks.md, "NIP training step".

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_convolution_backward = torch.ops.aten.convolution_backward


def _subpixels_to_rgb(z: torch.Tensor) -> torch.Tensor:
    """``(N, 12, h, w)`` (channel ``4 c + 2 dy + dx``, any layout) -> ``(N, 4, 2h, 2w)``: depth-to-space of the
    three colours plus a constant channel of ones (the MLP's bias row)."""
    n, _, h, w = z.shape
    out = z.new_empty(n, 4, 2 * h, 2 * w)
    out[:, 3].fill_(1.0)
    planes = out.view(n, 4, h, 2, w, 2)
    sub = z.view(n, 3, 2, 2, h, w)  # strides follow z's layout (channels-last or not)
    for dy in range(2):
        for dx in range(2):
            planes[:, :3, :, dy, :, dx].copy_(sub[:, :, dy, dx])
    return out


def _rgb_to_subpixels(g: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_subpixels_to_rgb` for three channels: ``(N, 3, 2h, 2w)`` -> ``(N, 12, h, w)``,
    channels-last (the layout the folded convolution's backward pass wants)."""
    n, _, hh, ww = g.shape
    h, w = hh // 2, ww // 2
    out = torch.empty(n, 12, h, w, dtype=g.dtype, device=g.device, memory_format=torch.channels_last)
    planes = g.view(n, 3, h, 2, w, 2)
    sub = out.view(n, 3, 2, 2, h, w)
    for dy in range(2):
        for dx in range(2):
            sub[:, :, dy, dx].copy_(planes[:, :, :, dy, :, dx])
    return out


def _inet_fused_forward(
    padded: torch.Tensor, kernel: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, keep: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Folded convolution, depth-to-space, sigmoid MLP and clip. Returns the output ``(N, 3, 2h, 2w)``, the
    MLP input ``(N, 4, 2h, 2w)`` and, when ``keep``, the hidden activations with their ones row
    ``(N, 13, 4hw)``."""
    z = _subpixels_to_rgb(F.conv2d(padded, kernel))
    n, _, hh, ww = z.shape
    p = hh * ww
    out = z.new_empty(n, 3, hh, ww)
    hidden = z.new_empty(n if keep else 1, 13, p)
    hidden[:, 12].fill_(1.0)
    # Views made once (unbind), not per image: the loop is short enough for Python overhead to show.
    hiddens = hidden.unbind(0) if keep else hidden.expand(n, 13, p).unbind(0)
    pre = hidden[:, :12].unbind(0) if keep else hidden[:, :12].expand(n, 12, p).unbind(0)
    for zi, hi, pi, oi in zip(z.view(n, 4, p).unbind(0), hiddens, pre, out.view(n, 3, p).unbind(0)):
        torch.mm(w1, zi, out=pi).sigmoid_()
        torch.mm(w2, hi, out=oi).clamp_(0, 1)
    return out, z, hidden if keep else None


class _INetFused(torch.autograd.Function):
    """Autograd wrapper of :func:`_inet_fused_forward`; the clip passes gradients straight through."""

    @staticmethod
    def forward(ctx: Any, padded: torch.Tensor, kernel: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        padded = padded.contiguous(memory_format=torch.channels_last)
        kernel = kernel.contiguous(memory_format=torch.channels_last)
        out, z, hidden = _inet_fused_forward(padded, kernel, w1, w2, keep=True)
        ctx.save_for_backward(padded, kernel, w1, w2, z, hidden)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        padded, kernel, w1, w2, z, hidden = ctx.saved_tensors
        n, _, hh, ww = z.shape
        p = hh * ww
        grad = grad.contiguous()
        grad_rgb = grad.new_empty(n, 3, hh, ww)
        grad_w1, grad_w2 = torch.zeros_like(w1), torch.zeros_like(w2)
        w1t, w2t = w1[:, :3].t(), w2[:, :12].t()
        views = zip(grad.view(n, 3, p).unbind(0), hidden.transpose(1, 2).unbind(0), hidden[:, :12].unbind(0),
                    z.view(n, 4, p).transpose(1, 2).unbind(0), grad_rgb.view(n, 3, p).unbind(0))
        for g, h_t, act, z_t, gr in views:
            grad_w2.addmm_(g, h_t)
            grad_pre = _sigmoid_backward(torch.mm(w2t, g), act)
            grad_w1.addmm_(grad_pre, z_t)
            torch.mm(w1t, grad_pre, out=gr)
        need_input, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_padded = grad_kernel = None
        if need_input or need_kernel:
            grad_padded, grad_kernel, _ = _convolution_backward(
                _rgb_to_subpixels(grad_rgb), padded, kernel, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [need_input, need_kernel, False],
            )
        return grad_padded, grad_kernel, grad_w1, grad_w2


class NIP(nn.Module):
    """Base class: checks the input and records how far one output pixel sees (for tiled development).

    Attributes:
        receptive_radius: how many RGGB-stack pixels on each side influence one output pixel.
        alignment: tiles must start at multiples of this many RGGB-stack pixels for tiled output to equal
            whole-image output (pooling grids).
    """

    receptive_radius: int = 0
    alignment: int = 1

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 4:
            raise InputError(f"NIP input must be an RGGB stack (N, 4, h, w), got shape {tuple(x.shape)}")


@registry.register("inet", "nip", "INet: bilinear demosaicing, colour matrix and gamma as convolutions (321 params)")
class INet(NIP):
    """INet (paper Table 2): a hand-designed pipeline written as 4 convolutions, 321 trainable parameters.

    Fixed 1x1 conv 4->12 + depth-to-space (places the samples), 5x5 conv 3->3 initialized as bilinear
    demosaicing, 1x1 conv 3->3 colour conversion, 1x1 3->12 tanh and 1x1 12->3 gamma (initialized from
    :data:`GAMMA_NET`), clip.

    Args:
        cam_to_srgb: initial 3x3 colour matrix (camera RGB -> sRGB); identity when omitted.

    Shape:
        ``(N, 4, h, w)`` -> ``(N, 3, 2h, 2w)``.
    """

    receptive_radius = 2
    alignment = 1

    def __init__(self, cam_to_srgb: Sequence[Sequence[float]] | np.ndarray | torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("bayer", bayer_to_rgb_weight())
        self.register_buffer("_fold_index", _fold_index(), persistent=False)
        self.demosaic = nn.Conv2d(3, 3, 5, bias=False)  # padded by mirror_pad_rggb (CFA-preserving)
        self.color = nn.Conv2d(3, 3, 1, bias=False)
        self.gamma_hidden = nn.Conv2d(3, 12, 1)
        self.gamma_out = nn.Conv2d(12, 3, 1)
        matrix = torch.eye(3) if cam_to_srgb is None else torch.as_tensor(np.asarray(cam_to_srgb), dtype=torch.float32)
        if matrix.shape != (3, 3):
            raise InputError(f"cam_to_srgb must be a 3x3 matrix, got shape {tuple(matrix.shape)}")
        with torch.no_grad():
            self.demosaic.weight.copy_(_bilinear_weight())
            self.color.weight.copy_(matrix.reshape(3, 3, 1, 1))
            w1, b1 = torch.tensor(GAMMA_NET["w1"]), torch.tensor(GAMMA_NET["b1"])
            w2, b2 = torch.tensor(GAMMA_NET["w2"]), torch.tensor(GAMMA_NET["b2"])
            h = len(w1)
            self.gamma_hidden.weight.zero_()
            self.gamma_out.weight.zero_()
            for c in range(3):
                rows = slice(c * h, (c + 1) * h)
                self.gamma_hidden.weight[rows, c, 0, 0] = w1
                self.gamma_hidden.bias[rows] = b1
                self.gamma_out.weight[c, rows, 0, 0] = w2
                self.gamma_out.bias[c] = b2[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same function as :meth:`forward_layers`, computed faster: the sample placement, the 5x5
        demosaicing and the colour matrix are linear, so they are folded into one 3x3 convolution 4->12 at
        half resolution (one output channel per colour and sub-pixel), followed by depth-to-space; the 1x1
        layers are matrix products. On the CPU (float32/float64) the gamma layers run image by image in a
        fused kernel (``tanh(a) = 2 sigmoid(2a) - 1``; see the module's ``_INetFused``), always in the input's
        float precision: an enclosing autocast region does not lower it (321 parameters gain nothing from
        bfloat16)."""
        self._check(x)
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return self._forward_composed(x)
        with torch.autocast("cpu", enabled=False):
            kernel = torch.einsum("oc,cikl->oikl", self.color.weight[:, :, 0, 0], self.demosaic.weight)
            folded = torch.cat([kernel.flatten(), kernel.new_zeros(1)])[self._fold_index]
            w1, b1 = self.gamma_hidden.weight[:, :, 0, 0], self.gamma_hidden.bias
            w2, b2 = self.gamma_out.weight[:, :, 0, 0], self.gamma_out.bias
            # tanh(a) = 2 sigmoid(2a) - 1; each bias is a last column (the MLP inputs carry a row of ones)
            w1 = torch.cat([2 * w1, 2 * b1[:, None]], 1)
            w2 = torch.cat([2 * w2, (b2 - w2.sum(1))[:, None]], 1)
            padded = mirror_pad_rggb(x)
            if torch.is_grad_enabled() and any(t.requires_grad for t in (padded, folded, w1, w2)):
                return _INetFused.apply(padded, folded, w1, w2)
            padded = padded.contiguous(memory_format=torch.channels_last)
            return _inet_fused_forward(padded, folded.contiguous(memory_format=torch.channels_last), w1, w2, False)[0]

    def _forward_composed(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from standard operations (GPUs, other dtypes): the folded convolution, then the
        gamma layers as einsums over the whole batch."""
        kernel = torch.einsum("oc,cikl->oikl", self.color.weight[:, :, 0, 0], self.demosaic.weight)
        folded = torch.cat([kernel.flatten(), kernel.new_zeros(1)])[self._fold_index]
        rgb = F.pixel_shuffle(F.conv2d(mirror_pad_rggb(x), folded), 2)
        hidden = torch.tanh(torch.einsum("jc,nchw->njhw", self.gamma_hidden.weight[:, :, 0, 0], rgb)
                            + self.gamma_hidden.bias[:, None, None])
        rgb = torch.einsum("cj,njhw->nchw", self.gamma_out.weight[:, :, 0, 0], hidden) + self.gamma_out.bias[:, None, None]
        return clip_ste(rgb)

    def forward_layers(self, x: torch.Tensor) -> torch.Tensor:
        """The layers of paper Table 2 one by one (reference for :meth:`forward`)."""
        self._check(x)
        mosaic = F.pixel_shuffle(F.conv2d(x, self.bayer), 2)
        rgb = self.color(self.demosaic(F.pad(mosaic, (2, 2, 2, 2), mode="reflect")))
        rgb = self.gamma_out(torch.tanh(self.gamma_hidden(rgb)))
        return clip_ste(rgb)


UNET_BASELINES = (None, "inet", "menon")
"""Renderings a :class:`UNet` can correct instead of starting from zero (its ``baseline`` argument)."""


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
        Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2),
    )


@registry.register("unet", "nip", "UNet after 'Learning to See in the Dark': 5 levels, 32-512 channels")
class UNet(NIP):
    """UNet (paper Table 3, after Chen et al. "Learning to See in the Dark"), 7,760,268 trainable parameters.

    Five levels of two 3x3 convs + leaky ReLU (0.2), 2x2 max pooling; decoder with 2x2 stride-2 transposed
    convs (no bias), skip concatenation, two 3x3 convs; 1x1 conv to 12 channels, depth-to-space, clip.
    Inputs whose size is not a multiple of 16 are reflection-padded (bottom/right) and the output cropped.

    Args:
        width: channels of the first level (paper: 32); levels double it.
        baseline: a rendering the UNet corrects (its last layer starts at zero, so training starts from the
            baseline's rendering instead of from noise; not in the paper, a faster CPU start). ``"inet"``: an
            INet (bilinear demosaicing, 321 more trainable parameters). ``"menon"``: the python ISP itself in
            torch (:class:`~neuralimaging.acquisition.isp.PythonISP`: Menon 2007, colour matrix, gamma; no
            trainable parameters), so the NIP starts at the target's fidelity and the UNet learns only the
            correction (patch borders, and in joint training the traces). Default: none (the paper's UNet).
        cam_to_srgb: the baseline's (initial) colour matrix.
        gamma: the ``menon`` baseline's gamma curve, ``"2.2"`` or ``"srgb"`` (that of the dataset's targets).

    Shape:
        ``(N, 4, h, w)`` -> ``(N, 3, 2h, 2w)``.
    """

    alignment = 16

    def __init__(
        self,
        width: int = 32,
        baseline: str | None = None,
        cam_to_srgb: Sequence[Sequence[float]] | np.ndarray | torch.Tensor | None = None,
        gamma: str = "2.2",
    ) -> None:
        super().__init__()
        if baseline not in UNET_BASELINES:
            raise InputError(f"UNet baseline must be None, 'inet' or 'menon', got {baseline!r}")
        if cam_to_srgb is not None and baseline is None:
            raise InputError("UNet takes cam_to_srgb only with a baseline ('inet' or 'menon')")
        c = [width * 2**i for i in range(5)]
        self.down = nn.ModuleList([_double_conv(4, c[0])] + [_double_conv(c[i - 1], c[i]) for i in range(1, 5)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(c[i], c[i - 1], 2, stride=2, bias=False) for i in range(4, 0, -1)])
        self.dec = nn.ModuleList([_double_conv(2 * c[i - 1], c[i - 1]) for i in range(4, 0, -1)])
        self.head = nn.Conv2d(c[0], 12, 1)
        if baseline == "inet":
            self.baseline: nn.Module | None = INet(cam_to_srgb)
        elif baseline == "menon":
            self.baseline = PythonISP(cam_to_srgb, gamma=gamma)  # type: ignore[arg-type]
        else:
            self.baseline = None
        if self.baseline is not None:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # Input pixels that influence an output block aligned to the 16-pixel pooling grid lie within 94
        # pixels of it (found by back-propagation; tests/acquisition/test_nip.py checks it).
        self.receptive_radius = 94

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        base = None
        if self.baseline is not None:  # in float32 even under autocast: it carries the output's precision
            with torch.autocast(x.device.type, enabled=False):
                base = self.baseline(x.float())
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.up, self.dec):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        y = F.pixel_shuffle(self.head(x), 2)[..., : 2 * h, : 2 * w]
        return clip_ste(y if base is None else base + y)


class _ReflectionPad1(nn.Module):
    """``nn.ReflectionPad2d(1)`` that keeps its input's dtype under autocast.

    CPU autocast runs ``reflection_pad2d`` in float32, so under bfloat16 each of DNet's pads converted a
    bfloat16 activation to float32 and the next convolution converted it back (about 40% of DNet's bfloat16
    step). Padding only copies values, so the result is the same, bit for bit. No parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.pad(x, (1, 1, 1, 1), mode="reflect")

    def extra_repr(self) -> str:
        return "padding=1"


class _BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalizes a narrow channels-last CPU tensor in the standard layout.

    On a CPU, batch norm of a channels-last tensor with few channels is much slower than of a contiguous one,
    by more than the two layout conversions cost; wider layers keep their layout, where the conversions would
    cost more (figures: ``docs/benchmarks.md``, "CPU op choices"). Same values and the same parameters and
    buffers as ``nn.BatchNorm2d`` (checkpoints load in either).
    """

    narrow = 16
    """Channel count up to which a channels-last CPU input is normalized contiguous."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.shape[1] <= self.narrow
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _ValidConvBNReLU(nn.Sequential):
    """3x3 valid convolution (no bias) + batch norm + ReLU + reflection padding back to the input size.

    The ReLU works in place (batch norm's backward needs its input, not its output): one tensor less per
    layer."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, bias=False), _BatchNorm2d(cout), nn.ReLU(inplace=True), _ReflectionPad1()
        )


@registry.register("dnet", "nip", "DNet after Gharbi et al. 2016: 15 conv+BN layers and a full-resolution stage")
class DNet(NIP):
    """DNet (paper Table 4, after Gharbi et al. 2016 "Deep joint demosaicking and denoising"),
    493,976 trainable parameters.

    14 x (3x3 valid conv 64 + BN + ReLU + reflection pad), a 15th to 12 channels, depth-to-space;
    concatenated with the mosaic placed as RGB (fixed 1x1 conv 4->12 + depth-to-space, as in INet);
    3x3 valid conv 64 + ReLU + reflection pad; 1x1 conv to 3 (no bias); clip.

    Args:
        width: feature channels (paper: 64).
        depth: conv + BN layers before the 12-channel one (paper: 14).

    Shape:
        ``(N, 4, h, w)`` -> ``(N, 3, 2h, 2w)``.
    """

    def __init__(self, width: int = 64, depth: int = 14) -> None:
        super().__init__()
        layers = [_ValidConvBNReLU(4, width)] + [_ValidConvBNReLU(width, width) for _ in range(depth - 1)]
        layers.append(_ValidConvBNReLU(width, 12))
        self.features = nn.Sequential(*layers)
        self.register_buffer("bayer", bayer_to_rgb_weight())
        self.fuse = nn.Sequential(nn.Conv2d(6, width, 3), nn.ReLU(inplace=True), _ReflectionPad1())
        self.out = nn.Conv2d(width, 3, 1, bias=False)
        self.receptive_radius = depth + 2  # depth+1 half-resolution convs + one full-resolution conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if min(x.shape[-2:]) < 2:
            raise InputError(f"DNet needs an RGGB stack of at least 2x2 pixels, got {tuple(x.shape[-2:])}")
        fconv = F.pixel_shuffle(self.features(x), 2)
        fbayer = F.pixel_shuffle(F.conv2d(x, self.bayer), 2)
        y = self.out(self.fuse(torch.cat([fconv, fbayer], dim=1)))
        return clip_ste(y)


_NIPS: dict[str, type[NIP]] = {"inet": INet, "unet": UNet, "dnet": DNet}


def names() -> list[str]:
    """Names of the NIPs this module defines (the registry also lists them, with every other model)."""
    return list(_NIPS)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Check that ``options`` are keyword arguments NIP ``name`` takes, with usable values.

    Raises:
        InputError: for an unknown NIP or option, a width or depth that is not a positive integer, or an
            unknown baseline or gamma.
    """
    builder = _NIPS.get(str(name).lower())
    if builder is None:
        raise InputError(f"unknown NIP {name!r}; expected one of: {', '.join(_NIPS)}")
    if not isinstance(options, Mapping):
        raise InputError(f"nip_options must be a mapping of option -> value, got {options!r}")
    known = [p for p in inspect.signature(builder.__init__).parameters if p != "self"]
    for key, value in options.items():
        if key not in known:
            raise InputError(f"nip_options: {builder.__name__} takes no option {key!r}; expected some of: {', '.join(known)}")
        if key in ("width", "depth") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"nip_options {key} must be a positive integer, got {value!r}")
    if options.get("baseline") not in UNET_BASELINES:
        raise InputError(f"nip_options baseline must be null, 'inet' or 'menon', got {options['baseline']!r}")
    if "gamma" in options and options["gamma"] not in GAMMAS:
        raise InputError(f"nip_options gamma must be one of {', '.join(GAMMAS)}, got {options['gamma']!r}")


def create(name: str, **kwargs: object) -> NIP:
    """Build a NIP by name (``"inet"``, ``"unet"``, ``"dnet"``, case-insensitive); keyword arguments go to it
    (checked by :func:`check_options`)."""
    check_options(name, kwargs)
    return _NIPS[str(name).lower()](**kwargs)


def _starts(size: int, step: int) -> list[int]:
    return list(range(0, size, step)) if size > 0 else [0]


@torch.no_grad()
def develop_tiled(
    model: nn.Module,
    rggb: torch.Tensor,
    tile: int = 512,
    overlap: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Develop a large RGGB stack tile by tile with bounded memory.

    Each tile's core (``tile - 2 * overlap`` pixels) is developed with ``overlap`` pixels of context on
    every side; only the core is kept. With ``overlap >= model.receptive_radius`` and tiles starting on the
    model's pooling grid, the result equals whole-image development except near the image border (where the
    whole-image output itself depends on padding) — no seams.

    Args:
        model: a NIP (put in eval mode for the call; its mode is restored afterwards).
        rggb: ``(N, 4, h, w)`` normalized RGGB stack (any device; the output stays on the CPU).
        tile: tile side in RGGB-stack pixels, context included.
        overlap: context on each side; default: the model's receptive radius rounded up to its alignment.
        device: where to run the model (default: where its parameters are).

    Returns:
        ``(N, 3, 2h, 2w)`` float32 RGB in [0, 1], on the CPU.
    """
    if rggb.dim() != 4 or rggb.shape[1] != 4:
        raise InputError(f"develop_tiled expects an RGGB stack (N, 4, h, w), got shape {tuple(rggb.shape)}")
    align = int(getattr(model, "alignment", 1))
    radius = int(getattr(model, "receptive_radius", 0))
    if overlap is None:
        overlap = radius
    overlap = int(math.ceil(overlap / align) * align)
    core = (tile - 2 * overlap) // align * align
    if core < align:
        raise InputError(
            f"tile {tile} is too small for overlap {overlap} (alignment {align}); use tile >= {2 * overlap + align}"
        )
    params = list(model.parameters()) + list(model.buffers())
    run_on = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    n, _, h, w = rggb.shape
    out = torch.empty(n, 3, 2 * h, 2 * w, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        for y0 in _starts(h, core):
            for x0 in _starts(w, core):
                y1, x1 = min(y0 + core, h), min(x0 + core, w)
                cy0, cx0 = max(0, y0 - overlap), max(0, x0 - overlap)
                cy1, cx1 = min(h, y1 + overlap), min(w, x1 + overlap)
                crop = rggb[:, :, cy0:cy1, cx0:cx1].to(run_on, torch.float32)
                rgb = model(crop).float().cpu()
                oy, ox = 2 * (y0 - cy0), 2 * (x0 - cx0)
                out[:, :, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] = rgb[:, :, oy : oy + 2 * (y1 - y0), ox : ox + 2 * (x1 - x0)]
    finally:
        model.train(was_training)
    return out


def develop_raw(
    model: nn.Module,
    raw: Any,
    *,
    tile: int = 512,
    overlap: int | None = None,
    orient: bool = True,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Develop a RAW file (or :class:`~neuralimaging.acquisition.raw.RawImage`) with a NIP, tile by tile.

    The NIP sees the normalized RGGB stack of the file (:func:`~neuralimaging.acquisition.bayer.normalize`),
    mirror-padded where the sensor's pattern does not start on red, and its output is cropped back to the
    sensor: ``(3, H, W)`` pixel for pixel like the python ISP and LibRaw, whatever the CFA pattern, turned
    upright by the orientation tag when ``orient``.

    Returns:
        ``float32 (3, H, W)`` in [0, 1] (numpy), ``H x W`` the sensor's visible size (swapped by a 90-degree
        orientation).
    """
    from neuralimaging.acquisition.bayer import cfa_offset, normalize
    from neuralimaging.acquisition.isp import apply_orientation
    from neuralimaging.acquisition.raw import RawImage, read_raw

    image = raw if isinstance(raw, RawImage) else read_raw(raw)
    stack = torch.from_numpy(normalize(image, pad=True))[None]
    rgb = develop_tiled(model, stack, tile=tile, overlap=overlap, device=device)[0].numpy()
    (dy, dx), (h, w) = cfa_offset(image.cfa), image.mosaic.shape
    rgb = np.ascontiguousarray(rgb[:, dy : dy + h, dx : dx + w])
    return apply_orientation(rgb, image.orientation) if orient else rgb
