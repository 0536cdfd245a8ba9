"""FAN: parameter count from the paper, the Bayar-Stamm constraint as a property, shapes and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neuralimaging import registry
from neuralimaging.errors import InputError
from neuralimaging.forensics.fan import FAN, ConstrainedConv2d, constrain_residual


class TestConstrainedConv2d:
    @pytest.mark.parametrize("scale", [1.0, 100.0])
    @pytest.mark.parametrize("mode", ["train", "eval"])
    def test_constraint_holds_in_train_and_eval(self, scale: float, mode: str) -> None:
        layer = ConstrainedConv2d(3, 3, 5, scale=scale)
        with torch.no_grad():  # arbitrary signed weights, not just the initialization
            layer.weight.normal_()
        getattr(layer, mode)()
        w = layer.constrained_weight.detach()
        # float32 sums: tolerance relative to each kernel's L1 norm (signed weights may nearly cancel).
        tol = 1e-6 * w.abs().sum(dim=(-2, -1))
        torch.testing.assert_close(w[:, :, 2, 2], torch.full((3, 3), -scale))
        assert ((w.sum(dim=(-2, -1))).abs() <= tol).all()
        off = w.clone()
        off[:, :, 2, 2] = 0
        assert ((off.sum(dim=(-2, -1)) - scale).abs() <= tol).all()

    def test_forward_uses_constrained_kernels(self) -> None:
        layer = ConstrainedConv2d(3, 3, 5).eval()
        with torch.no_grad():
            layer.weight.normal_()
        x = torch.rand(2, 3, 16, 16)
        expected = F.conv2d(x, constrain_residual(layer.weight.detach()), padding=2)
        torch.testing.assert_close(layer(x), expected)

    def test_constraint_holds_after_an_optimizer_step(self) -> None:
        layer = ConstrainedConv2d(3, 3, 5)
        opt = torch.optim.SGD(layer.parameters(), lr=10.0)
        layer(torch.rand(1, 3, 16, 16)).square().mean().backward()
        opt.step()
        w = layer.constrained_weight
        torch.testing.assert_close(w[:, :, 2, 2], torch.full((3, 3), -1.0))
        torch.testing.assert_close(w.sum(dim=(-2, -1)), torch.zeros(3, 3), atol=1e-4, rtol=0)

    def test_flat_image_gives_zero_residual(self) -> None:
        # A residual filter removes constant content: the layer ignores the scene's DC level.
        layer = ConstrainedConv2d(3, 3, 5, padding=0)
        out = layer(torch.full((1, 3, 12, 12), 0.7))
        torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-5, rtol=0)

    def test_gradcheck(self) -> None:
        weight = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
        weight.requires_grad_(True)
        assert torch.autograd.gradcheck(constrain_residual, (weight,))

    def test_even_kernel_rejected(self) -> None:
        with pytest.raises(InputError, match="odd"):
            ConstrainedConv2d(3, 3, 4)


class TestFAN:
    def test_parameter_count_matches_paper(self) -> None:
        # Korus & Memon, supplement Table 6: 1,341,990 trainable parameters (5 classes, RGB).
        assert registry.count_parameters(FAN()) == 1_341_990

    def test_registered_and_buildable_without_arguments(self) -> None:
        kinds = {e.name: e.kind for e in registry.entries(kind="fan")}
        assert kinds.get("fan") == "fan"
        assert registry.count_parameters(registry.create("fan", kind="fan")) == 1_341_990

    @pytest.mark.parametrize("size", [16, 32, 64])
    @pytest.mark.parametrize("n_classes", [2, 5])
    def test_logits_shape_and_gradients(self, size: int, n_classes: int) -> None:
        fan = FAN(n_classes=n_classes)
        logits = fan(torch.rand(3, 3, size, size))
        assert logits.shape == (3, n_classes)
        assert torch.isfinite(logits).all()
        F.cross_entropy(logits, torch.arange(3) % n_classes).backward()
        for name, p in fan.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name

    def test_returns_logits_not_probabilities(self) -> None:
        logits = FAN()(torch.rand(4, 3, 32, 32))
        # Softmax is left to the loss: rows of logits do not form a probability distribution.
        assert not torch.allclose(logits.sum(dim=1), torch.ones(4))

    def test_eval_is_deterministic(self) -> None:
        fan = FAN().eval()
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(fan(x), fan(x))

    def test_forward_is_the_paper_layer_order(self) -> None:
        """The FAN pools before its leaky ReLUs (faster); it must equal conv -> leaky ReLU -> max-pool, the
        layer order of supplement Table 6, in value and gradient (float64)."""
        torch.manual_seed(0)
        fan = FAN().double()

        def paper_order(x: torch.Tensor) -> torch.Tensor:
            x = fan.residual(x)
            for conv in fan.features:
                x = F.max_pool2d(F.leaky_relu(conv(x), 0.2), 2)
            x = F.leaky_relu(fan.mix(x), 0.2).mean(dim=(-2, -1))
            return fan.fc3(F.leaky_relu(fan.fc2(F.leaky_relu(fan.fc1(x), 0.2)), 0.2))

        x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = fan(x1), paper_order(x2)
        torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
        g = torch.randn_like(y1)
        params = list(fan.parameters())
        grads1 = torch.autograd.grad(y1, [x1, *params], g)
        grads2 = torch.autograd.grad(y2, [x2, *params], g)
        for a, b in zip(grads1, grads2):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    def test_small_input_rejected(self) -> None:
        with pytest.raises(InputError, match="H, W >= 16"):
            FAN()(torch.rand(1, 3, 8, 8))

    def test_learns_to_separate_filtered_patches(self) -> None:
        # Two classes: raw noise vs the same noise blurred. A few Adam steps are enough to separate them.
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(16, 3, 32, 32, generator=gen)
        blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        inputs = torch.cat([x, blurred])
        labels = torch.cat([torch.zeros(16), torch.ones(16)]).long()
        fan = FAN(n_classes=2)
        opt = torch.optim.Adam(fan.parameters(), lr=1e-4)
        first = None
        for _ in range(15):
            opt.zero_grad()
            loss = F.cross_entropy(fan(inputs), labels)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        with torch.no_grad():
            accuracy = (fan(inputs).argmax(1) == labels).float().mean().item()
        assert loss.item() < first
        assert accuracy > 0.9
