"""Neural imaging pipelines: paper parameter counts, shapes and gradients, INet's meaningful start, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralimaging import registry
from neuralimaging.acquisition import nip
from neuralimaging.acquisition.bayer import from_rggb
from neuralimaging.errors import InputError
from neuralimaging.metrics import psnr

# Narrow variants keep the tiling tests fast; the receptive radius does not depend on the width.
SMALL = {"inet": {}, "unet": {"width": 4}, "dnet": {"width": 8}}


@pytest.mark.parametrize(("name", "count"), [("inet", 321), ("unet", 7_760_268), ("dnet", 493_976)])
def test_parameter_counts_match_the_paper(name, count):
    """Supplement Tables 2-4 of Korus & Memon."""
    assert registry.count_parameters(nip.create(name)) == count
    assert registry.count_parameters(registry.create(name, kind="nip")) == count


@pytest.mark.parametrize("entry", registry.entries("nip"), ids=lambda e: e.name)
def test_every_registered_nip_output_and_gradients(entry):
    torch.manual_seed(0)
    model = entry.builder()
    model.train()
    x = torch.rand(2, 4, 24, 40)  # 24 is not a multiple of UNet's 16
    y = model(x)
    assert y.shape == (2, 3, 48, 80)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    (y * torch.rand_like(y)).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, f"{entry.name}.{pname} gets no gradient"


@pytest.mark.parametrize("name", nip.names())
def test_rejects_wrong_input(name):
    with pytest.raises(InputError, match="RGGB stack"):
        nip.create(name, **SMALL[name])(torch.rand(1, 3, 16, 16))


def test_unknown_nip():
    with pytest.raises(InputError, match="unknown NIP"):
        nip.create("resnet")


def test_clip_ste_passes_gradient_straight_through():
    x = torch.tensor([-0.5, 0.3, 1.7], requires_grad=True)
    y = nip.clip_ste(x)
    assert y.tolist() == pytest.approx([0.0, 0.3, 1.0])
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_bayer_layer_places_samples_like_from_rggb():
    """Fixed first layer + depth-to-space == the RGGB mosaic (bayer.from_rggb), split by colour."""
    stack = torch.rand(2, 4, 6, 10)
    placed = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(stack, nip.bayer_to_rgb_weight()), 2)
    torch.testing.assert_close(placed.sum(1), from_rggb(stack, "RGGB"))
    assert placed[:, 0, 0::2, 0::2].equal(stack[:, 0]) and placed[:, 2, 1::2, 1::2].equal(stack[:, 3])
    assert placed[:, 1, 0::2, 1::2].equal(stack[:, 1]) and placed[:, 1, 1::2, 0::2].equal(stack[:, 2])


def test_gamma_net_constants_approximate_gamma():
    """The stored 1-4-1 tanh net is a close fit to x^(1/2.2) (45 dB when fitted)."""
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]
    g = {k: torch.tensor(v, dtype=torch.float64) for k, v in nip.GAMMA_NET.items()}
    y = torch.tanh(x * g["w1"] + g["b1"]) @ g["w2"] + g["b2"]
    mse = ((y - x[:, 0] ** (1 / 2.2)) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 42


@pytest.mark.slow
def test_gamma_net_constants_are_reproducible():
    fitted = nip.fit_gamma_net()
    for key, values in nip.GAMMA_NET.items():
        np.testing.assert_allclose(fitted[key], values, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("value", [0.05, 0.2, 0.6])
def test_inet_initial_weights_develop_flat_grey(value):
    """Bilinear demosaicing of a flat field is flat; identity colour; gamma ~ x^(1/2.2) (interior pixels)."""
    out = nip.create("inet")(torch.full((1, 4, 8, 8), value))
    interior = out[..., 3:-3, 3:-3]
    torch.testing.assert_close(interior, torch.full_like(interior, value ** (1 / 2.2)), atol=0.02, rtol=0)


def test_inet_uses_given_colour_matrix():
    matrix = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]], dtype=np.float32)
    model = nip.INet(cam_to_srgb=matrix)
    np.testing.assert_allclose(model.color.weight[..., 0, 0].detach().numpy(), matrix)
    with pytest.raises(InputError, match="3x3"):
        nip.INet(cam_to_srgb=np.eye(2))


def _perturbed_inet(seed: int = 0) -> nip.INet:
    """An INet moved off its initialization (full gamma matrices, non-identity colour) and clipping somewhere."""
    torch.manual_seed(seed)
    model = nip.INet(cam_to_srgb=[[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _values_and_gradients(forward, model: nip.INet, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    x = x.clone().requires_grad_()
    out = forward(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    return [out.detach(), x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("shape", [(3, 4, 10, 14), (1, 4, 2, 2), (2, 4, 33, 8)])
def test_inet_forward_equals_the_layers_of_table_2(shape):
    """The fused CPU kernel and the composed form compute the paper's layers: values, input and weight
    gradients (float64 reference, clipped pixels included: the clip passes gradients straight through)."""
    model = _perturbed_inet()
    x = torch.rand(*shape) * 1.2
    reference = [t.clone() for t in _values_and_gradients(model.double().forward_layers, model, x.double())]
    model.float()
    out = model(x)
    assert out.dtype == torch.float32 and ((out == 0) | (out == 1)).any()  # clipping is exercised
    for forward in (model.forward, model._forward_composed):
        for got, want in zip(_values_and_gradients(forward, model, x), reference):
            torch.testing.assert_close(got.double(), want, atol=2e-5 * max(1.0, float(want.abs().max())), rtol=0)


def test_inet_without_gradients_channels_last_and_under_autocast():
    """No-grad (no saved activations), channels-last input and bfloat16 autocast give the float32 result."""
    model = _perturbed_inet(1)
    x = torch.rand(2, 4, 12, 16)
    reference = model.forward_layers(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=2e-6, rtol=0)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)).detach(), reference,
                               atol=2e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.detach(), reference, atol=2e-6, rtol=0)


@pytest.mark.parametrize("name", nip.names())
def test_receptive_radius_is_an_upper_bound(name):
    """Back-propagate from an output block aligned to the pooling grid: no input farther than the declared
    radius may influence it (the tiling overlap relies on it)."""
    torch.manual_seed(0)
    model = nip.create(name, **SMALL[name]).eval()
    size = 2 * model.receptive_radius + 2 * model.alignment + 16
    size += (-size) % model.alignment
    x = torch.rand(1, 4, size, size, requires_grad=True)
    a = (size // 2) // model.alignment * model.alignment
    block = slice(2 * a, 2 * (a + model.alignment))
    model(x)[0, :, block, block].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
    assert rows.numel() > 0
    lo, hi = a - model.receptive_radius, a + model.alignment - 1 + model.receptive_radius
    assert rows.min() >= lo and rows.max() <= hi and cols.min() >= lo and cols.max() <= hi


@pytest.mark.parametrize("name", nip.names())
@pytest.mark.parametrize("extra", [(30, 52), (7 * 2, 13 * 2)])
def test_tiled_equals_whole_image(name, extra):
    """Several tiles per axis, sizes not multiples of the tile or of UNet's 16: no seams, no differences."""
    torch.manual_seed(1)
    model = nip.create(name, **SMALL[name])
    tile = 2 * model.receptive_radius + 2 * model.alignment + (32 if name == "unet" else 12)
    x = torch.rand(2, 4, tile + extra[0], tile + extra[1])
    whole = model.eval()(x)
    model.train()  # develop_tiled switches to eval itself and restores the mode
    tiled = nip.develop_tiled(model, x, tile=tile)
    assert model.training
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole.detach(), atol=2e-6, rtol=0)


def test_tiled_rejects_too_small_tiles():
    with pytest.raises(InputError, match="too small"):
        nip.develop_tiled(nip.create("dnet", width=8), torch.rand(1, 4, 40, 40), tile=20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dnet_padding_keeps_the_dtype_under_autocast(dtype):
    """DNet's reflection padding equals nn.ReflectionPad2d(1) and, under bfloat16 autocast (which runs
    reflection_pad2d in float32), leaves bfloat16 activations bfloat16: no round trip through float32."""
    x = torch.rand(2, 5, 6, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    reference = torch.nn.ReflectionPad2d(1)(x)
    pad = nip._ReflectionPad1()
    assert pad(x).dtype == dtype and torch.equal(pad(x), reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded = pad(x)
    assert padded.dtype == dtype and torch.equal(padded, reference)
    model = nip.create("dnet", width=8, depth=2).eval()
    seen = []
    for module in model.modules():
        if isinstance(module, nip._ReflectionPad1):
            module.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(1, 4, 12, 12))
    assert len(seen) == 4 and set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("channels", [12, 64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dnet_batch_norm_equals_torch_batch_norm(channels, channels_last):
    """DNet's batch norm (narrow channels-last CPU tensors normalized contiguous) gives nn.BatchNorm2d's
    output, input and parameter gradients and running statistics, keeps the input's layout and its keys."""
    torch.manual_seed(0)
    ours, ref = nip._BatchNorm2d(channels).double(), torch.nn.BatchNorm2d(channels).double()
    with torch.no_grad():
        for p in (*ours.parameters(), *ref.parameters()):
            p.copy_(torch.linspace(0.5, 1.5, channels, dtype=torch.float64))
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, channels, 5, 6, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    assert y1.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    g = torch.randn_like(y2)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("camera", ["canon-5d2", "nikon-d90", "pentax-k5", "sony-a700"])  # RGGB GBRG BGGR GRBG
def test_develop_raw_covers_the_sensor_for_every_pattern(camera, small_dngs):
    """INet (bilinear + the camera matrix + gamma at the start) against the python ISP, pixel for pixel."""
    from neuralimaging.acquisition import isp
    from neuralimaging.acquisition.raw import read_raw

    raw = read_raw(small_dngs[camera][0])
    model = nip.INet(cam_to_srgb=raw.cam_to_srgb)
    rgb = nip.develop_raw(model, raw, orient=False, tile=64)
    python = isp.develop(raw, "python", orient=False)
    assert rgb.shape == python.shape == (3, *raw.mosaic.shape)
    aligned = np.corrcoef(python[1].ravel(), rgb[1].ravel())[0, 1]
    for shifted in (np.corrcoef(python[1, 1:].ravel(), rgb[1, :-1].ravel())[0, 1],
                    np.corrcoef(python[1, :, 1:].ravel(), rgb[1, :, :-1].ravel())[0, 1]):
        assert aligned > 0.95 and aligned > shifted
    for a, b in ((python[:, 0], rgb[:, 0]), (python[:, -1], rgb[:, -1]), (python[:, :, 0], rgb[:, :, 0])):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9  # the edges a cropped stack would lose
    assert np.array_equal(nip.develop_raw(model, raw, tile=64), isp.apply_orientation(rgb, raw.orientation))
