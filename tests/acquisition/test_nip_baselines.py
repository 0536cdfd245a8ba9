"""UNet over a baseline rendering: the ``menon`` baseline (the python ISP in torch) and the ``inet`` one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralimaging.acquisition import nip
from neuralimaging.acquisition.bayer import mosaic_rgb, to_rggb
from neuralimaging.acquisition.isp import PythonISP, develop_rggb
from neuralimaging.errors import InputError

MATRIX = np.array([[1.7, -0.5, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.4, 1.4]], dtype=np.float32)


def _stack(photo: np.ndarray, size: int = 64) -> np.ndarray:
    """A white-balanced RGGB stack cut from a photo (linearized), ``float32 (4, size/2, size/2)``."""
    rgb = (photo[:size, :size].astype(np.float32) / 255.0) ** 2.2
    return to_rggb(mosaic_rgb(rgb.transpose(2, 0, 1), "RGGB"), "RGGB").astype(np.float32)


def _with_random_head(model: nip.UNet, seed: int = 0) -> nip.UNet:
    """The zero-initialized correction made non-zero, so tests see the UNet's part too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.weight.copy_(1e-2 * torch.randn(model.head.weight.shape, generator=gen))
    return model


def test_menon_baseline_starts_at_the_python_isp(photos):
    """Untrained, the NIP renders exactly what the python ISP (colour-demosaicing) gives on the same stack."""
    stack = _stack(photos[0])
    model = nip.UNet(4, baseline="menon", cam_to_srgb=MATRIX).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(stack)[None])[0].numpy()
    ref = develop_rggb(stack, MATRIX)
    assert out.shape == ref.shape
    assert np.abs(out - ref).mean() < 1e-5
    assert np.mean(np.round(out * 255) != np.round(ref * 255)) < 1e-3  # same 8-bit target almost everywhere


def test_menon_baseline_has_no_trainable_parameters_and_keeps_its_matrix(tmp_path):
    plain, based = nip.UNet(4), nip.UNet(4, baseline="menon", cam_to_srgb=MATRIX)
    assert sum(p.numel() for p in based.parameters()) == sum(p.numel() for p in plain.parameters())
    state = based.state_dict()
    again = nip.UNet(4, baseline="menon")  # as load_nip builds it: identity matrix until the state is loaded
    again.load_state_dict(state)
    torch.testing.assert_close(again.baseline.cam_to_srgb, torch.from_numpy(MATRIX))


@pytest.mark.parametrize("baseline", ["inet", "menon"])
def test_baseline_stays_float32_under_bf16_autocast(baseline, photos):
    """Only the correction runs in bfloat16: at the start (zero correction) autocast changes nothing."""
    x = torch.from_numpy(_stack(photos[1]))[None]
    model = nip.UNet(4, baseline=baseline, cam_to_srgb=MATRIX).eval()
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, atol=1e-6, rtol=0)


def test_menon_baseline_tiled_equals_whole_image():
    torch.manual_seed(2)
    model = _with_random_head(nip.UNet(4, baseline="menon", cam_to_srgb=MATRIX))
    tile = 2 * model.receptive_radius + 2 * model.alignment + 32
    x = torch.rand(1, 4, tile + 30, tile + 14)
    whole = model.eval()(x)
    tiled = nip.develop_tiled(model, x, tile=tile)
    torch.testing.assert_close(tiled, whole.detach(), atol=2e-6, rtol=0)


def test_gradients_reach_the_correction_only():
    model = _with_random_head(nip.UNet(4, baseline="menon", cam_to_srgb=MATRIX))
    model(torch.rand(2, 4, 16, 16)).square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.head.weight.grad.abs().sum() > 0


def test_python_isp_module_checks_its_arguments():
    with pytest.raises(InputError, match="3x3"):
        PythonISP(np.eye(2))
    with pytest.raises(InputError, match="gamma"):
        PythonISP(gamma="1.8")
    with pytest.raises(InputError, match="RGGB stack"):
        PythonISP()(torch.rand(1, 3, 8, 8))


def test_unet_rejects_unknown_baselines():
    with pytest.raises(InputError, match="baseline"):
        nip.UNet(4, baseline="bilinear")
    with pytest.raises(InputError, match="cam_to_srgb"):
        nip.UNet(4, cam_to_srgb=MATRIX)
