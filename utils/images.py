"""Images as bytes: the one float-to-uint8 conversion of PNGs, grids, videos and the demo."""

import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Float image(s) in [0, 1], channels first ([..., 3, h, w]) -> uint8 numpy [..., h, w, 3]:
    clamped, scaled by 255 and rounded half up."""
    x = image.detach().float().clamp(0, 1).movedim(-3, -1).cpu().numpy()  # [..., h, w, 3]
    return (x * 255 + 0.5).astype(np.uint8)
