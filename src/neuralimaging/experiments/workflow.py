"""The acquisition + distribution + analysis workflow as one differentiable model (paper Fig. 1, section 4).

RAW patches go through the NIP, every manipulation class (``native`` first), the sharing channel and the
FAN. A batch of ``N`` RAW patches becomes ``N x C`` FAN inputs, class-major: rows ``[c*N, (c+1)*N)`` carry
label ``c``. The loss is the paper's eq. (3)::

    L = CE(FAN(channel(m_c(NIP(x)))), c) + lambda_nip * MSE(255 * NIP(x), 255 * y)

where ``y`` is the standard ("python") ISP's rendering of the same RAW patch.

    >>> wf = build_workflow(nip, manipulations="native,sharpen,gaussian,jpeg,resample",
    ...                     channel="down:2,jpeg:50")                       # doctest: +SKIP
    >>> out = wf(rggb)                                                       # doctest: +SKIP
    >>> total, parts = workflow_loss(out, target, lambda_nip=0.01)           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralimaging.errors import InputError
from neuralimaging.forensics.fan import FAN

__all__ = [
    "PRECISIONS",
    "native_bf16",
    "resolve_precision",
    "ResidualNIP",
    "WorkflowOutput",
    "Workflow",
    "build_workflow",
    "manipulate",
    "nip_mse",
    "workflow_loss",
    "PIXEL_SCALE",
]

PIXEL_SCALE = 255.0
"""The NIP fidelity term is computed on the [0, 255] scale, as in the paper and the authors' toolbox."""

PRECISIONS = ("auto", "bf16", "fp32")
"""Compute precisions of the workflow: ``bf16`` runs the NIP body and the FAN under bfloat16 autocast (the NIP
output, the manipulations, the channel's JPEG, the losses and all weights stay float32); ``fp32`` runs all
in float32; ``auto`` picks ``bf16`` where the device computes it natively (:func:`native_bf16`), else
``fp32`` (emulated bfloat16 is slower than float32). Not in the paper: a CPU speed-up."""


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively, so that bfloat16 autocast is faster than float32:
    a CUDA GPU with bfloat16 support, or an x86 CPU with AVX512-BF16 or AMX (oneDNN). ``False`` when unknown.

    oneDNN also accepts bfloat16 on plain AVX512 CPUs, but emulates it there, more slowly than float32.
    """
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if device.type == "cpu":
            if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
                return False
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private checks that an older or other build lacks
        return False
    return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for a :data:`PRECISIONS` value on ``device`` (``"auto"``: :func:`native_bf16`)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@dataclass
class WorkflowOutput:
    """What one pass of the workflow produces.

    Attributes:
        rgb: NIP output ``(N, 3, 2h, 2w)`` in [0, 1].
        logits: FAN logits ``(N * C, C)`` for every (class, patch) pair, class-major.
        labels: class index of each row of ``logits``, ``(N * C,)`` int64.
    """

    rgb: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


class ResidualNIP(nn.Module):
    """A pre-trained NIP plus a trainable UNet residual that starts at exactly zero.

    ``out = clip(base(x) + unet(x) - 0.5)``: the UNet's 1x1 head starts with zero weights and bias 0.5, so the
    output equals the base NIP's until joint training moves it. This gives a NIP with a UNet's capacity (the
    paper's best F+N pipeline) whose starting fidelity is that of a quickly pre-trained one (the ``quick``
    preset's INet); the paper's UNet needs hours of pre-training to reach the same fidelity. Used by the
    ``quick`` preset of :mod:`~neuralimaging.experiments.train_manipulation` (``residual_width``).

    Args:
        base: the pre-trained NIP ``(N, 4, h, w) -> (N, 3, 2h, 2w)``.
        width: first-level width of the residual UNet (the paper's UNet has 32).

    Shape:
        ``(N, 4, h, w) -> (N, 3, 2h, 2w)`` in [0, 1] (clipping passes gradients straight through).
    """

    def __init__(self, base: nn.Module, width: int = 16) -> None:
        super().__init__()
        from neuralimaging.acquisition.nip import UNet

        if width < 1:
            raise InputError(f"residual UNet width must be >= 1, got {width}")
        self.base = base
        self.residual = UNet(width=width)
        with torch.no_grad():
            self.residual.head.weight.zero_()
            self.residual.head.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from neuralimaging.acquisition.nip import clip_ste

        return clip_ste(self.base(x) + self.residual(x) - 0.5)


def manipulate(rgb: torch.Tensor, manipulations: Sequence[nn.Module]) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply every manipulation to every patch.

    Args:
        rgb: developed patches ``(N, 3, H, W)`` in [0, 1].
        manipulations: the classes in label order (``native`` first); each maps ``(N, 3, H, W)`` to the same
            shape.

    Returns:
        ``(N * C, 3, H, W)`` manipulated patches (class-major) and their labels ``(N * C,)``.
    """
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise InputError(f"manipulations take RGB patches (N, 3, H, W), got {tuple(rgb.shape)}")
    outputs = []
    for index, manipulation in enumerate(manipulations):
        out = manipulation(rgb)
        if out.shape != rgb.shape:
            name = getattr(manipulation, "name", type(manipulation).__name__)
            raise InputError(f"manipulation {name!r} changed the patch shape {tuple(rgb.shape)} -> {tuple(out.shape)}")
        outputs.append(out)
    labels = torch.arange(len(manipulations), device=rgb.device).repeat_interleave(rgb.shape[0])
    return torch.cat(outputs), labels


class Workflow(nn.Module):
    """NIP -> manipulations -> channel -> FAN.

    Args:
        nip: RAW-to-RGB network ``(N, 4, h, w) -> (N, 3, 2h, 2w)``.
        fan: classifier with one output per manipulation class.
        manipulations: modules in label order, ``native`` (identity) first.
        channel: the sharing channel (down-sampling + compression), ``(M, 3, H, W) -> (M, 3, H', W')``.
        nip_bf16: run the NIP body under bfloat16 autocast (faster UNet/DNet steps on CPUs with native
            bfloat16); its output is returned in float32, so the manipulations, the channel and the
            fidelity term see float32. INet ignores it (it computes in float32 whatever the autocast).
        fan_bf16: run the FAN under bfloat16 autocast (faster on CPUs with native bfloat16). Logits are
            returned in float32.
        channels_last: feed the FAN channels-last tensors, and the NIP too where it runs under bfloat16
            (``nip_bf16``); the weights keep their layout. A float32 NIP keeps the standard layout, where
            channels-last was slower on a CPU (figures: ``docs/benchmarks.md``, "CPU op choices").
    """

    def __init__(
        self,
        nip: nn.Module,
        fan: nn.Module,
        manipulations: Sequence[nn.Module],
        channel: nn.Module,
        *,
        nip_bf16: bool = False,
        fan_bf16: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.nip_bf16 = bool(nip_bf16)
        self.fan_bf16 = bool(fan_bf16)
        self.channels_last = bool(channels_last)
        if len(manipulations) < 2:
            raise InputError(f"the workflow needs at least 2 manipulation classes, got {len(manipulations)}")
        n_out = getattr(fan, "n_classes", None)
        if n_out is not None and n_out != len(manipulations):
            raise InputError(f"the FAN has {n_out} outputs but there are {len(manipulations)} manipulation classes")
        self.nip = nip
        self.fan = fan
        self.manipulations = nn.ModuleList(manipulations)
        self.channel = channel

    @property
    def class_names(self) -> list[str]:
        """Manipulation names in label order."""
        return [getattr(m, "name", type(m).__name__.lower()) for m in self.manipulations]

    def develop(self, rggb: torch.Tensor, *, float32: bool = False) -> torch.Tensor:
        """The NIP's output ``(N, 3, 2h, 2w)``, float32 and contiguous whatever the NIP computed in.

        Args:
            rggb: RAW patches ``(N, 4, h, w)``.
            float32: ignore ``nip_bf16`` (validation measures the NIP as it would be deployed).
        """
        if self.channels_last and self.nip_bf16:
            rggb = rggb.contiguous(memory_format=torch.channels_last)
        if self.nip_bf16 and not float32:
            with torch.autocast(rggb.device.type, dtype=torch.bfloat16):
                rgb = self.nip(rggb)
        else:
            rgb = self.nip(rggb)
        return rgb.float().contiguous()

    def distribute(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Manipulate developed patches and send them through the channel: ``(N*C, 3, H', W')`` and labels."""
        manipulated, labels = manipulate(rgb, self.manipulations)
        return self.channel(manipulated), labels

    def classify(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FAN logits ``(N*C, C)`` (float32) and labels for developed patches ``(N, 3, H, W)``."""
        shared, labels = self.distribute(rgb)
        if self.channels_last:
            shared = shared.contiguous(memory_format=torch.channels_last)
        if self.fan_bf16:
            with torch.autocast(shared.device.type, dtype=torch.bfloat16):
                logits = self.fan(shared)
            return logits.float(), labels
        return self.fan(shared), labels

    def forward(self, rggb: torch.Tensor) -> WorkflowOutput:
        if rggb.ndim != 4 or rggb.shape[1] != 4:
            raise InputError(f"the workflow takes RGGB stacks (N, 4, h, w), got {tuple(rggb.shape)}")
        rgb = self.develop(rggb)
        logits, labels = self.classify(rgb)
        return WorkflowOutput(rgb=rgb, logits=logits, labels=labels)


def build_workflow(
    nip: nn.Module,
    *,
    manipulations: str | Sequence[nn.Module] = "native,sharpen,gaussian,jpeg,resample",
    channel: str | nn.Module = "down:2,jpeg:50",
    fan: nn.Module | None = None,
    fan_options: dict | None = None,
    precision: str = "auto",
    fan_bf16: bool = False,
    channels_last: bool = True,
    device: str | torch.device | None = None,
) -> Workflow:
    """Assemble a :class:`Workflow` from names (``manipulations.parse`` / ``Channel.parse`` specs) or modules.

    Args:
        nip: the (pre-trained) NIP.
        manipulations: a spec such as ``"native,sharpen,gaussian,jpeg,resample"`` or modules.
        channel: a spec such as ``"down:2,jpeg:50"`` (``"none"`` switches it off) or a module.
        fan: a FAN to use; by default a fresh :class:`FAN` with one output per class.
        fan_options: keyword arguments for the fresh FAN (``constraint_scale``, ...).
        precision: one of :data:`PRECISIONS`. The default ``"auto"`` runs the NIP body and the FAN under
            bfloat16 autocast where the device computes it natively (faster joint steps: ``docs/benchmarks.md``,
            "Joint step") and in float32 elsewhere; ``"fp32"`` is the paper's arithmetic.
        fan_bf16: run the FAN under bfloat16 autocast even with ``precision="fp32"``.
        channels_last: feed the NIP and the FAN channels-last tensors (see :class:`Workflow`).
        device: where the workflow will run, for ``precision="auto"`` (default: where the NIP's weights are).
    """
    from neuralimaging.distribution import manipulations as manipulation_registry
    from neuralimaging.distribution.channel import Channel

    mods = manipulation_registry.parse(manipulations) if isinstance(manipulations, str) else list(manipulations)
    chan = Channel.parse(channel) if isinstance(channel, str) else channel
    if fan is None:
        fan = FAN(n_classes=len(mods), **(fan_options or {}))
    if device is None:
        weights = next(iter(nip.parameters()), None)
        device = weights.device if weights is not None else torch.device("cpu")
    bf16 = resolve_precision(precision, device) == "bf16"
    return Workflow(nip, fan, mods, chan, nip_bf16=bf16, fan_bf16=bf16 or fan_bf16, channels_last=channels_last)


def nip_mse(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the NIP output against the standard ISP target on the [0, 255] scale."""
    if rgb.shape != target.shape:
        raise InputError(f"NIP output {tuple(rgb.shape)} and target {tuple(target.shape)} differ in shape")
    return F.mse_loss(rgb, target) * PIXEL_SCALE**2  # one fused pass (scaling both inputs costs two more)


def workflow_loss(
    out: WorkflowOutput, target: torch.Tensor, lambda_nip: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's joint loss: cross-entropy of the FAN + ``lambda_nip`` x MSE of the NIP (255 scale).

    Returns:
        The scalar loss to minimise and its parts (``ce``, ``nip_mse``, ``loss``) as floats for logging.
    """
    ce = F.cross_entropy(out.logits, out.labels)
    mse = nip_mse(out.rgb, target)
    total = ce + lambda_nip * mse if lambda_nip > 0 else ce
    return total, {"loss": float(total.detach()), "ce": float(ce.detach()), "nip_mse": float(mse.detach())}
