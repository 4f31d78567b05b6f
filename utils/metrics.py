"""Image metrics as the reference computes them, and the two trivial baselines renders must beat.

PSNR, SSIM and LPIPS are per image on images clamped to [0, 1], then averaged by the caller
(the reference protocol, which LVSM and Efficient-LVSM share with pixelSplat).
"""

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from utils.lpips_vgg import HEADS_HELP, VGG16_HELP, LpipsVGG, package_heads_path

# Wang et al. 2004 and the reference's structural_similarity(win_size=11, gaussian_weights=True).
SSIM_WINDOW = 11


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB: pred, target [..., 3, h, w] in [0, 1] -> [...] (float32)."""
    mse = (pred.float().clamp(0, 1) - target.float().clamp(0, 1)).pow(2).mean(dim=(-3, -2, -1))
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def nearest_view_baseline(images: torch.Tensor, c2w: torch.Tensor, target_c2w: torch.Tensor) -> torch.Tensor:
    """For each target, the input image whose camera centre is nearest to the target's.

    images [b, v_in, 3, h, w], c2w [b, v_in, 4, 4], target_c2w [b, v_t, 4, 4] -> [b, v_t, 3, h, w]."""
    dist = torch.cdist(target_c2w[..., :3, 3].float(), c2w[..., :3, 3].float())  # [b, v_t, v_in]
    nearest = dist.argmin(dim=-1)  # [b, v_t]
    return images[torch.arange(images.shape[0], device=images.device)[:, None], nearest]


def mean_image_baseline(images: torch.Tensor, num_targets: int) -> torch.Tensor:
    """The per-pixel mean of a scene's input views, for every target: [b, v_in, 3, h, w] -> [b, v_t, 3, h, w]."""
    return images.mean(dim=1, keepdim=True).expand(-1, num_targets, -1, -1, -1)


def _images_hwc(x: torch.Tensor) -> np.ndarray:
    """[..., 3, h, w] tensor -> [N, h, w, 3] float32 numpy, clamped to [0, 1]."""
    x = x.detach().float().clamp(0, 1).cpu()
    return x.reshape(-1, *x.shape[-3:]).permute(0, 2, 3, 1).numpy()


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {list(pred.shape)} and target {list(target.shape)} differ in shape")
    if pred.ndim < 3 or pred.shape[-3] != 3:
        raise ValueError(f"{name}: images must be [..., 3, h, w], got {list(pred.shape)}")


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM: pred, target [..., 3, h, w] in [0, 1] -> [...] (float32), h, w >= 11.

    The reference evaluation's call: scikit-image's structural_similarity(win_size=11,
    gaussian_weights=True, data_range=1.0, channel_axis) per image, on float32 images clamped to
    [0, 1]. That is a Gaussian window (sigma 1.5, 11 taps, mirrored borders), K1 0.01, K2 0.03,
    (co)variances scaled by 121/120 (its default sample covariance), the SSIM map averaged without
    a 5-pixel border, each channel on its own, then the channels averaged.
    """
    # Imported here: scikit-image pulls in scipy, which the training loop (it imports psnr) never needs.
    from skimage.metrics import structural_similarity

    _check_pair(pred, target, "ssim")
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images of {list(pred.shape[-2:])} pixels are smaller than the "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} window")
    a, b = _images_hwc(pred), _images_hwc(target)  # [N, h, w, 3] each
    scores = [structural_similarity(x, y, win_size=SSIM_WINDOW, gaussian_weights=True, data_range=1.0,
                                    channel_axis=-1) for x, y in zip(a, b)]
    return torch.tensor(scores, dtype=torch.float32).reshape(pred.shape[:-3]).to(pred.device)


# What building the scorer raises when lpips cannot run: the package or torchvision is missing
# (ImportError, ModuleNotFoundError), the VGG weights cannot be downloaded or read (OSError, which
# includes urllib's URLError), a corrupt or mismatched checkpoint (RuntimeError, ValueError), or an
# lpips/torchvision version pair whose APIs no longer fit (AttributeError, TypeError).
LPIPS_BUILD_ERRORS = (ImportError, OSError, RuntimeError, ValueError, AttributeError, TypeError)


class LpipsScorer:
    """LPIPS as the reference evaluation computes it: lpips.LPIPS(net="vgg"), normalize=True.

    Two backends. With `vgg16_path`, our own LPIPS-VGG (utils/lpips_vgg.py, no torchvision) from that
    VGG-16 file and the heads file `heads_path` (None: the copy inside an installed lpips package).
    Without it, the lpips package. Built on first use. When neither can be built here, `available` is
    False, `reason` holds why, one warning is issued, and every call returns NaN scores, so the
    evaluation writes its other metrics rather than stopping. `backend` names the one in use.
    """

    def __init__(self, device: torch.device | str = "cpu", vgg16_path: str | os.PathLike | None = None,
                 heads_path: str | os.PathLike | None = None, autocast=None):
        """`autocast`: a context factory the network runs under (the reference scores LPIPS inside its
        evaluation's bf16 autocast); None: fp32."""
        self.device = torch.device(device)
        self.autocast = autocast
        self.vgg16_path = None if vgg16_path is None else Path(vgg16_path)
        self.heads_path = None if heads_path is None else Path(heads_path)
        self._net = None
        self._ours = False  # our LpipsVGG (takes [0, 1] images) rather than the package's module
        self._backend: str | None = None
        self._reason: str | None = None
        self._built = False

    def _build(self) -> None:
        if self._built:
            return
        self._built = True
        if self.vgg16_path is not None:
            self._build_ours()
        else:
            self._build_package()
        if self._net is None:
            warnings.warn(f"LPIPS is unavailable, its scores will be NaN ({self._reason})", RuntimeWarning,
                          stacklevel=3)

    def _build_ours(self) -> None:
        if not self.vgg16_path.is_file():
            where = "" if self.vgg16_path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
            self._reason = f"inference.lpips_vgg16_path={self.vgg16_path}: no such file{where}. {VGG16_HELP}"
            return
        try:
            net = LpipsVGG.from_files(self.vgg16_path, self.heads_path)
        except (FileNotFoundError, ValueError) as err:  # a file missing, unreadable, or with wrong keys / shapes
            self._reason = f"{type(err).__name__}: {err}"
            return
        self._net, self._ours = net.to(self.device), True
        heads = self.heads_path if self.heads_path is not None else f"{package_heads_path()} (lpips package)"
        self._backend = f"ours (VGG-16 {self.vgg16_path}, heads {heads})"

    def _build_package(self) -> None:
        try:
            import lpips

            self._net = lpips.LPIPS(net="vgg").to(self.device).eval()
            self._backend = "lpips package"
        except LPIPS_BUILD_ERRORS as err:
            self._reason = (f"{type(err).__name__}: {err}; or set inference.lpips_vgg16_path (and "
                            f"inference.lpips_heads_path) for our LPIPS-VGG, which needs neither the lpips "
                            f"package nor torchvision. {VGG16_HELP} {HEADS_HELP}")

    @property
    def available(self) -> bool:
        self._build()
        return self._net is not None

    @property
    def reason(self) -> str | None:
        """Why LPIPS is unavailable (the build error), or None when it is available."""
        self._build()
        return self._reason

    @property
    def backend(self) -> str | None:
        """"ours (VGG-16 <file>, heads <file>)" or "lpips package"; None when unavailable."""
        self._build()
        return self._backend

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS: pred, target [..., 3, h, w] in [0, 1] -> [...] (float32), NaN if unavailable."""
        _check_pair(pred, target, "lpips")
        lead = pred.shape[:-3]
        if not self.available:
            return torch.full(lead, float("nan"), dtype=torch.float32, device=pred.device)
        x, y = (t.detach().float().clamp(0, 1).reshape(-1, *t.shape[-3:]).to(self.device) for t in (pred, target))
        # the package's module: [N, 1, 1, 1], normalize=True for inputs in [0, 1]; ours: [N], [0, 1] inputs
        with self.autocast() if self.autocast is not None else contextlib.nullcontext():
            scores = self._net(x, y) if self._ours else self._net(x, y, normalize=True)
        return scores.float().reshape(lead).to(pred.device)

