"""Images as bytes: the one float-to-uint8 conversion of PNGs, grids, videos and the demo; the shape
check of the VGG-based image comparisons."""

import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Float image(s) in [0, 1], channels first ([..., 3, h, w]) -> uint8 numpy [..., h, w, 3]:
    clamped, scaled by 255 and rounded half up."""
    x = image.detach().float().clamp(0, 1).movedim(-3, -1).cpu().numpy()  # [..., h, w, 3]
    return (x * 255 + 0.5).astype(np.uint8)


def check_vgg_pair(pred: torch.Tensor, target: torch.Tensor, min_size: int, deepest: str, prefix: str = "") -> None:
    """ValueError unless pred and target are both [n, 3, h, w] with h, w >= min_size (a VGG's `deepest`
    tap comes after four 2x2 poolings)."""
    if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
        raise ValueError(f"{prefix}pred and target must both be [n, 3, h, w], got {list(pred.shape)} "
                         f"and {list(target.shape)}")
    if min(pred.shape[-2:]) < min_size:
        raise ValueError(f"{prefix}images must be at least {min_size}x{min_size} pixels ({deepest} comes after "
                         f"four 2x2 poolings), got {list(pred.shape[-2:])}")
