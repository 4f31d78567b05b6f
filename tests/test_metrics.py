"""PSNR and SSIM against values worked out independently; LPIPS degrades to NaN when it cannot run."""

import importlib.util
import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from utils.metrics import LpipsScorer, psnr, ssim


def _gaussian_filter(img: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """Separable Gaussian blur of [h, w], 2 * radius + 1 taps normalized to sum 1, borders mirrored
    about the edge (d c b a | a b c d: numpy 'symmetric', which is scipy.ndimage's 'reflect')."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    h, w = img.shape
    p = np.pad(img.astype(np.float64), radius, mode="symmetric")  # [h + 2r, w + 2r]
    rows = sum(k[i] * p[i:i + h, :] for i in range(len(k)))  # [h, w + 2r]
    return sum(k[j] * rows[:, j:j + w] for j in range(len(k)))  # [h, w]


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of [3, h, w] images in [0, 1] from the formula of Wang et al. 2004, with scikit-image's
    choices: Gaussian window sigma 1.5 truncated at 3.5 sigma (11 taps), K1 = 0.01, K2 = 0.03,
    data range 1, (co)variances scaled by N / (N - 1) with N = 11 * 11 (its default
    use_sample_covariance=True, applied even with Gaussian weights), the SSIM map averaged after
    cropping (11 - 1) // 2 = 5 pixels off every border, then averaged over channels."""
    c1, c2, n = 0.01 ** 2, 0.03 ** 2, 11 * 11
    scores = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        mx, my = _gaussian_filter(x), _gaussian_filter(y)
        vx = n / (n - 1) * (_gaussian_filter(x * x) - mx * mx)
        vy = n / (n - 1) * (_gaussian_filter(y * y) - my * my)
        cxy = n / (n - 1) * (_gaussian_filter(x * y) - mx * my)
        s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        scores.append(s[5:-5, 5:-5].mean())
    return float(np.mean(scores))


def _structured_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed non-square pair [3, 24, 20] from closed-form patterns (no RNG, so stable forever)."""
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(20.0), indexing="ij")
    c = torch.arange(3.0)[:, None, None]
    a = 0.5 + 0.4 * torch.sin(0.7 * x + 0.3 * y + c)
    b = a + 0.1 * torch.cos(1.3 * x - 0.9 * y + 2 * c) + 0.05 * torch.sin(0.2 * x * y)
    return a, b.clamp(0, 1)


def _random_pair(seed: int = 0, shape=(3, 16, 18)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    return a, (a + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)


def test_psnr_closed_form_and_clamping():
    a, b = torch.full((3, 8, 8), 0.3), torch.full((3, 8, 8), 0.4)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)  # mse 0.01 -> 20 dB
    # 1.5 is clamped to 1.0, 0.9 stays: again a 0.1 difference.
    assert psnr(torch.full((3, 8, 8), 1.5), torch.full((3, 8, 8), 0.9)).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, a).item() == pytest.approx(100.0)  # mse floored at 1e-10


def test_ssim_constant_images_closed_form():
    # No variance anywhere: SSIM reduces to the luminance term (2 a b + C1) / (a^2 + b^2 + C1).
    a, b = torch.full((3, 16, 16), 0.5), torch.full((3, 16, 16), 0.6)
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.5 ** 2 + 0.6 ** 2 + 1e-4)
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("pair", [_structured_pair(), _random_pair(0), _random_pair(1, (3, 11, 13))])
def test_ssim_matches_independent_formula(pair):
    a, b = pair
    assert ssim(a, b).item() == pytest.approx(_ssim_reference(a.numpy(), b.numpy()), abs=1e-5)


def test_ssim_and_psnr_pinned_values():
    # Computed once with _ssim_reference (float64) and the PSNR formula on _structured_pair, and
    # recorded here, so a change in scikit-image or in our call shows up as a failing number.
    a, b = _structured_pair()
    assert ssim(a, b).item() == pytest.approx(0.9490205, abs=1e-5)
    assert psnr(a, b).item() == pytest.approx(22.1962360, abs=1e-4)


def test_identical_images_and_clamping():
    a, b = _random_pair(2)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    wild = a * 3 - 1  # values far outside [0, 1]
    assert ssim(wild, b).item() == pytest.approx(ssim(wild.clamp(0, 1), b).item(), abs=1e-7)
    assert psnr(wild, b).item() == pytest.approx(psnr(wild.clamp(0, 1), b).item(), abs=1e-5)


def test_batched_shapes_score_each_image():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(2, 3, 3, 12, 12, generator=g), torch.rand(2, 3, 3, 12, 12, generator=g)
    s, p = ssim(pred, target), psnr(pred, target)
    assert s.shape == (2, 3) and p.shape == (2, 3) and s.dtype == torch.float32
    assert s[1, 2].item() == pytest.approx(ssim(pred[1, 2], target[1, 2]).item())
    assert s[1, 2].item() == pytest.approx(_ssim_reference(pred[1, 2].numpy(), target[1, 2].numpy()), abs=1e-5)


def test_ssim_rejects_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 17))
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.rand(3, 8, 16), torch.rand(3, 8, 16))


def _lpips_module(**attrs) -> types.ModuleType:
    """A stand-in `lpips` module holding attrs."""
    module = types.ModuleType("lpips")
    module.__dict__.update(attrs)
    return module


def test_lpips_unimportable_gives_nan_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` now raises ModuleNotFoundError
    scorer = LpipsScorer("cpu")
    pred = torch.rand(2, 3, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = scorer(pred, pred), scorer(pred[0], pred[0])
        assert not scorer.available
    assert len([w for w in caught if "LPIPS is unavailable" in str(w.message)]) == 1
    assert "ModuleNotFoundError" in scorer.reason and "lpips" in scorer.reason
    assert first.shape == (2, 3) and second.shape == (3,) and first.isnan().all() and second.isnan().all()


def test_lpips_build_failure_is_reported(monkeypatch):
    def no_weights(net):
        raise OSError(f"could not download the {net} weights")

    monkeypatch.setitem(sys.modules, "lpips", _lpips_module(LPIPS=no_weights))
    scorer = LpipsScorer("cpu")
    with pytest.warns(RuntimeWarning, match="LPIPS is unavailable"):
        assert not scorer.available
    assert scorer.reason.startswith("OSError: could not download the vgg weights; ")
    assert "inference.lpips_vgg16_path" in scorer.reason and scorer.backend is None
    assert scorer(torch.rand(3, 16, 16), torch.rand(3, 16, 16)).isnan().all()


@pytest.mark.skipif(importlib.util.find_spec("lpips") is not None, reason="lpips is installed here")
def test_lpips_unavailable_in_this_environment():
    scorer = LpipsScorer("cpu")
    with pytest.warns(RuntimeWarning, match="LPIPS is unavailable"):
        assert not scorer.available
    assert scorer.reason.startswith("ModuleNotFoundError")


def test_lpips_available_path_passes_vgg_normalize_and_keeps_shape(monkeypatch):
    calls = {}

    class FakeLpips(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            calls["net"] = net

        def forward(self, x, y, normalize=False):
            calls["normalize"], calls["range"] = normalize, (min(x.min(), y.min()), max(x.max(), y.max()))
            return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1] like lpips

    monkeypatch.setitem(sys.modules, "lpips", _lpips_module(LPIPS=FakeLpips))
    scorer = LpipsScorer("cpu")
    pred, target = torch.rand(2, 3, 3, 8, 8) * 2, torch.rand(2, 3, 3, 8, 8)
    out = scorer(pred, target)
    assert scorer.available and scorer.reason is None and scorer.backend == "lpips package"
    assert calls["net"] == "vgg" and calls["normalize"] is True
    assert 0 <= calls["range"][0] and calls["range"][1] <= 1  # clamped before scoring
    assert out.shape == (2, 3)
    assert out[1, 2].item() == pytest.approx((pred[1, 2].clamp(0, 1) - target[1, 2]).abs().mean().item())
    assert not math.isnan(out.sum().item())
