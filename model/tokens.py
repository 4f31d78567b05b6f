"""Patch tokenizers, the pixel head, and the checks every model runs on its inputs.

Input tokens: image scaled to [-1, 1] concatenated with the Plücker ray (o x d, d), 9 channels,
patchified in (patch-row, patch-col, channel) order; target tokens: the 6 Plücker channels only.
The head is LayerNorm, Linear, Sigmoid (reference).
"""

import contextlib

import torch
import torch.nn as nn
from einops import rearrange
from einops.layers.torch import Rearrange

from model.blocks import init_linear, layer_norm
from utils.geometry import check_intrinsics, check_poses, compute_rays, plucker

RGB_PLUCKER_CHANNELS = 9
PLUCKER_CHANNELS = 6
RAY_PRECISIONS = ("reference", "fp32")  # model.ray_precision: see ray_map


def patch_tokenizer(in_channels: int, patch: int, dim: int) -> nn.Sequential:
    """[b, v, c, h, w] -> [b*v, (h/p)*(w/p), d]; module `.1` is the Linear (reference key names)."""
    tokenizer = nn.Sequential(
        Rearrange("b v c (hh p) (ww q) -> (b v) (hh ww) (p q c)", p=patch, q=patch),
        nn.Linear(in_channels * patch * patch, dim, bias=False),
    )
    tokenizer.apply(init_linear)
    return tokenizer


def pixel_head(dim: int, patch: int, norm_affine: bool) -> nn.Sequential:
    """[B, n, d] -> [B, n, p*p*3] in (0, 1)."""
    head = nn.Sequential(layer_norm(dim, norm_affine), nn.Linear(dim, patch * patch * 3, bias=False), nn.Sigmoid())
    head.apply(init_linear)
    return head


def untokenize(pixels: torch.Tensor, b: int, h: int, w: int, patch: int) -> torch.Tensor:
    """[b*v, (h/p)*(w/p), p*p*3] -> images [b, v, 3, h, w]."""
    return rearrange(
        pixels, "(b v) (hh ww) (p q c) -> b v c (hh p) (ww q)", b=b, hh=h // patch, p=patch, q=patch, c=3
    )


def ray_map(c2w: torch.Tensor, fxfycxcy: torch.Tensor, h: int, w: int, precision: str) -> torch.Tensor:
    """Plücker map [b, v, 6, h, w] (float32) of each view's pixel-centre rays.

    precision (model.ray_precision) only matters under autocast. "reference": rays computed as the
    reference computed them inside its bf16 autocast (train.py / inference.py call process_data
    there): the rotation (a bmm) in bf16, so directions are off by up to ~0.3 degrees; the norm,
    division, cross product and the map itself in float32. "fp32": autocast is off for the rays.
    """
    if precision not in RAY_PRECISIONS:
        raise ValueError(f"model.ray_precision={precision!r}: expected one of {RAY_PRECISIONS}")
    exact = precision == "fp32"
    with torch.autocast(c2w.device.type, enabled=False) if exact else contextlib.nullcontext():
        ray_o, ray_d = compute_rays(c2w.float(), fxfycxcy.float(), h, w)  # [b, v, 3, h, w] each
        return plucker(ray_o, ray_d)


def posed_images(
    images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor, precision: str
) -> torch.Tensor:
    """Images in [0, 1] [b, v, 3, h, w] -> tokenizer input [b, v, 9, h, w] (float32); see ray_map."""
    h, w = images.shape[-2:]
    return torch.cat([images.float() * 2.0 - 1.0, ray_map(c2w, fxfycxcy, h, w, precision)], dim=2)


def _views_look_valid(images, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> bool:
    """All value checks of check_poses / check_intrinsics / finite images, fused into one
    device-side flag so the forward pays one host sync, not one per check."""
    r = c2w[..., :3, :3].float()
    ortho = (r.transpose(-1, -2) @ r - torch.eye(3, device=r.device)).abs().amax(dim=(-2, -1)) <= 1e-3
    det = (torch.linalg.cross(r[..., 0], r[..., 1], dim=-1) * r[..., 2]).sum(-1) > 0
    last = (c2w[..., 3, :] - c2w.new_tensor([0.0, 0.0, 0.0, 1.0])).abs().amax(-1) <= 1e-4
    ok = torch.isfinite(c2w).all() & (ortho & det & last).all()
    ok = ok & torch.isfinite(fxfycxcy).all() & (fxfycxcy[..., :2] > 0).all()
    if images is not None:
        ok = ok & torch.isfinite(images).all()
    return bool(ok)


def check_views(
    images: torch.Tensor | None, c2w: torch.Tensor, fxfycxcy: torch.Tensor, patch: int, what: str,
    image_size: tuple[int, int] | None = None,
) -> None:
    """Validate one set of views at the model's entry; errors name `what` and the culprit."""
    if images is not None:
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"{what} images must be [b, v, 3, h, w], got shape {tuple(images.shape)}")
        image_size = tuple(images.shape[-2:])
    h, w = image_size
    if h % patch or w % patch:
        raise ValueError(f"{what} image size {h}x{w} is not a multiple of the patch size {patch}")
    if c2w.dim() != 4 or c2w.shape[-2:] != (4, 4) or fxfycxcy.dim() != 3 or fxfycxcy.shape[-1] != 4:
        raise ValueError(f"{what} c2w must be [b, v, 4, 4] and {what} fxfycxcy [b, v, 4], "
                         f"got {tuple(c2w.shape)} and {tuple(fxfycxcy.shape)}")
    lead = tuple(c2w.shape[:2])
    if tuple(fxfycxcy.shape[:2]) != lead or (images is not None and tuple(images.shape[:2]) != lead):
        shapes = f"c2w {tuple(c2w.shape)}, fxfycxcy {tuple(fxfycxcy.shape)}"
        if images is not None:
            shapes += f", images {tuple(images.shape)}"
        raise ValueError(f"{what} views disagree on [b, v]: {shapes}")
    # The value check costs a host sync, which under torch.compile would split the graph: compiled
    # callers (the trainer, benchmarks) rely on their loaders' checks and the trainer's NaN guard.
    if torch.compiler.is_compiling():
        return
    if not _views_look_valid(images, c2w, fxfycxcy):  # slow path: find and name the culprit
        check_poses(c2w, name=f"{what} c2w")
        check_intrinsics(fxfycxcy, name=f"{what} fxfycxcy")
        if images is not None and not torch.isfinite(images).all():
            raise ValueError(f"{what} images contain non-finite values")


def patch_size_of(cfg) -> int:
    """Validate the tokenizer section of a ModelConfig (and model.ray_precision); returns the patch size."""
    if cfg.ray_precision not in RAY_PRECISIONS:
        raise ValueError(f"model.ray_precision={cfg.ray_precision!r}: expected one of {RAY_PRECISIONS}")
    for key, section, expected in (("image_tokenizer", cfg.image_tokenizer, RGB_PLUCKER_CHANNELS),
                                   ("target_pose_tokenizer", cfg.target_pose_tokenizer, PLUCKER_CHANNELS)):
        if section.in_channels != expected:
            raise ValueError(f"model.{key}.in_channels={section.in_channels}: only the default Plücker "
                             f"embedding is supported, which needs {expected} channels")
    if cfg.image_tokenizer.patch_size != cfg.target_pose_tokenizer.patch_size:
        raise ValueError(f"model.image_tokenizer.patch_size={cfg.image_tokenizer.patch_size} differs from "
                         f"model.target_pose_tokenizer.patch_size={cfg.target_pose_tokenizer.patch_size}")
    return cfg.image_tokenizer.patch_size
