"""The NIP -> manipulations -> channel -> FAN workflow: shapes, labels, gradients, the joint loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from neuralimaging.acquisition import nip as nips
from neuralimaging.distribution import manipulations
from neuralimaging.distribution.channel import Channel
from neuralimaging.errors import InputError
from neuralimaging.experiments.workflow import (
    PIXEL_SCALE,
    PRECISIONS,
    ResidualNIP,
    Workflow,
    WorkflowOutput,
    build_workflow,
    manipulate,
    native_bf16,
    nip_mse,
    resolve_precision,
    workflow_loss,
)
from neuralimaging.forensics.fan import FAN

SPEC = "native,sharpen,gaussian,jpeg,resample"


@pytest.fixture
def rggb() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(2, 4, 16, 16, generator=gen)


class TestManipulate:
    def test_class_major_labels_and_native_first(self) -> None:
        rgb = torch.rand(3, 3, 32, 32)
        mods = manipulations.parse(SPEC)
        out, labels = manipulate(rgb, mods)
        assert out.shape == (15, 3, 32, 32)
        assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
        torch.testing.assert_close(out[:3], rgb)  # native is the identity
        for c, m in enumerate(mods):
            torch.testing.assert_close(out[3 * c : 3 * c + 3], m(rgb))

    def test_rejects_non_rgb(self) -> None:
        with pytest.raises(InputError, match="RGB"):
            manipulate(torch.rand(2, 4, 8, 8), manipulations.parse(SPEC))


class TestWorkflow:
    @pytest.mark.parametrize("channel", ["down:2,jpeg:50", "none"])
    def test_shapes(self, rggb: torch.Tensor, channel: str) -> None:
        wf = build_workflow(nips.create("inet"), manipulations=SPEC, channel=channel)
        out = wf(rggb)
        assert isinstance(out, WorkflowOutput)
        assert out.rgb.shape == (2, 3, 32, 32)
        assert out.logits.shape == (10, 5)
        assert out.labels.shape == (10,)
        assert wf.class_names[0] == "native" and len(wf.class_names) == 5

    def test_channel_reduces_resolution(self, rggb: torch.Tensor) -> None:
        wf = build_workflow(nips.create("inet"), channel="down:2,jpeg:50")
        shared, labels = wf.distribute(wf.nip(rggb))
        assert shared.shape == (10, 3, 16, 16)
        assert labels.shape == (10,)

    def test_gradient_reaches_nip_through_channel(self, rggb: torch.Tensor) -> None:
        wf = build_workflow(nips.create("inet"), channel="down:2,jpeg:50")
        out = wf(rggb)
        F.cross_entropy(out.logits, out.labels).backward()
        grads = [p.grad for p in wf.nip.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    def test_class_count_must_match_fan(self) -> None:
        with pytest.raises(InputError, match="3 outputs"):
            Workflow(nips.create("inet"), FAN(n_classes=3), manipulations.parse(SPEC), Channel.parse("none"))


class TestLoss:
    def test_mse_on_255_scale_matches_float64(self) -> None:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
        expected = ((a.double() * 255 - b.double() * 255) ** 2).mean()
        torch.testing.assert_close(nip_mse(a, b).double(), expected, rtol=1e-5, atol=0)

    def test_lambda_zero_is_cross_entropy(self) -> None:
        logits, labels = torch.randn(10, 5), torch.arange(10) % 5
        out = WorkflowOutput(rgb=torch.rand(2, 3, 8, 8), logits=logits, labels=labels)
        total, parts = workflow_loss(out, torch.rand(2, 3, 8, 8), 0.0)
        torch.testing.assert_close(total, F.cross_entropy(logits, labels))
        assert parts["nip_mse"] > 0

    @pytest.mark.parametrize("lambda_nip", [1e-3, 0.1, 1.0])
    def test_joint_loss_is_ce_plus_lambda_mse(self, lambda_nip: float) -> None:
        gen = torch.Generator().manual_seed(1)
        rgb, target = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
        logits, labels = torch.randn(10, 5, generator=gen), torch.arange(10) % 5
        total, parts = workflow_loss(WorkflowOutput(rgb, logits, labels), target, lambda_nip)
        expected = F.cross_entropy(logits, labels) + lambda_nip * F.mse_loss(rgb * PIXEL_SCALE, target * PIXEL_SCALE)
        torch.testing.assert_close(total, expected)
        assert parts["loss"] == pytest.approx(float(expected), rel=1e-6)

    def test_shape_mismatch(self) -> None:
        with pytest.raises(InputError, match="differ in shape"):
            nip_mse(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4))


class TestResidualNIP:
    def test_starts_identical_to_base_and_learns(self, rggb: torch.Tensor) -> None:
        base = nips.create("inet")
        wrapped = ResidualNIP(base, width=4)
        torch.testing.assert_close(wrapped(rggb), base(rggb))
        wrapped(rggb).square().mean().backward()
        head = wrapped.residual.head
        assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0

    def test_rejects_bad_width(self) -> None:
        with pytest.raises(InputError, match="width"):
            ResidualNIP(nips.create("inet"), width=0)


class TestFanBF16:
    def test_logits_close_to_float32_and_gradients_flow(self, rggb: torch.Tensor) -> None:
        torch.manual_seed(0)
        wf = build_workflow(nips.create("inet"), channel="down:2,jpeg:50", precision="fp32")
        assert not wf.fan_bf16 and not wf.nip_bf16
        rgb = wf.nip(rggb).detach()
        with torch.no_grad():
            reference, _ = wf.classify(rgb)
        wf.fan_bf16 = True
        logits, labels = wf.classify(rgb)
        assert logits.dtype == torch.float32
        scale = float(reference.abs().max())
        torch.testing.assert_close(logits, reference, atol=0.05 * scale, rtol=0)
        F.cross_entropy(logits, labels).backward()
        assert all(p.grad is not None for p in wf.fan.parameters())


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


class TestPrecision:
    def test_native_bf16_follows_the_cpu_flags(self) -> None:
        flags = _cpu_flags()
        if flags is None or torch.backends.mkldnn.is_available() is False:
            pytest.skip("no /proc/cpuinfo or no oneDNN")
        assert native_bf16("cpu") == bool({"avx512_bf16", "amx_bf16"} & flags)

    def test_resolution(self) -> None:
        assert resolve_precision("fp32", "cpu") == "fp32"
        assert resolve_precision("bf16", "cpu") == "bf16"
        assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
        assert set(PRECISIONS) == {"auto", "bf16", "fp32"}
        with pytest.raises(InputError, match="precision"):
            resolve_precision("fp16", "cpu")
        wf = build_workflow(nips.create("inet"), precision="auto")
        assert wf.nip_bf16 == wf.fan_bf16 == native_bf16("cpu")
        wf = build_workflow(nips.create("inet"), precision="fp32", fan_bf16=True)
        assert wf.fan_bf16 and not wf.nip_bf16

    @pytest.mark.parametrize("channels_last", [False, True])
    def test_fp32_equals_the_plain_composition(self, rggb: torch.Tensor, channels_last: bool) -> None:
        """precision fp32 computes NIP -> manipulations -> channel -> FAN with nothing else in between."""
        torch.manual_seed(0)
        wf = build_workflow(nips.create("unet", width=4), precision="fp32", channels_last=channels_last).eval()
        with torch.no_grad():
            out = wf(rggb)
            rgb = wf.nip(rggb)
            manipulated, labels = manipulate(rgb, wf.manipulations)
            logits = wf.fan(wf.channel(manipulated))
        if channels_last:  # same arithmetic in another memory layout: float rounding only
            torch.testing.assert_close(out.rgb, rgb, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.logits, logits, atol=1e-4 * float(logits.abs().max()), rtol=0)
        else:
            assert torch.equal(out.rgb, rgb) and torch.equal(out.logits, logits)
        assert torch.equal(out.labels, labels)

    @pytest.mark.parametrize("precision", ["fp32", "bf16"])
    def test_channels_last_reaches_the_fan_and_only_a_bf16_nip(self, rggb: torch.Tensor, precision: str) -> None:
        """A float32 NIP keeps the standard layout (faster on AVX2 CPUs); the FAN and a bf16 NIP go channels-last."""
        wf = build_workflow(nips.create("unet", width=4), precision=precision, channels_last=True)
        seen: dict[str, bool] = {}

        def layout(name: str):
            def hook(module, args):
                seen[name] = args[0].is_contiguous(memory_format=torch.channels_last)
            return hook

        wf.nip.register_forward_pre_hook(layout("nip"))
        wf.fan.register_forward_pre_hook(layout("fan"))
        with torch.no_grad():
            wf(rggb)
        assert seen == {"nip": precision == "bf16", "fan": True}

    def test_bf16_joint_step_is_float32_outside_and_trains_the_nip(self, rggb: torch.Tensor) -> None:
        torch.manual_seed(0)
        nip = nips.create("unet", width=4)
        wf = build_workflow(nip, precision="bf16").eval()
        assert wf.nip_bf16 and wf.fan_bf16
        out = wf(rggb)
        assert out.rgb.dtype == torch.float32 and out.logits.dtype == torch.float32 and out.rgb.is_contiguous()
        with torch.no_grad():
            reference = nip(rggb)
            torch.testing.assert_close(wf.develop(rggb, float32=True), reference)  # validation: float32
        torch.testing.assert_close(out.rgb.detach(), reference, atol=0.03, rtol=0)  # bfloat16 noise only
        total, parts = workflow_loss(out, torch.rand_like(out.rgb), 0.1)
        assert math.isfinite(parts["loss"]) and math.isfinite(parts["nip_mse"])
        total.backward()
        grads = [p.grad for p in nip.parameters()]
        assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in wf.fan.parameters())
