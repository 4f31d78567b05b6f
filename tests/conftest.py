"""Shared test helpers: paths, tiny model configs, random but valid posed views."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"

from configs.schema import config_from_dict

TINY = {
    "efficient_lvsm": {"transformer": {"d": 32, "d_head": 8, "n_layer": 2}},
    "lvsm_decoder_only": {"transformer": {"d": 32, "d_head": 8, "n_layer": 2}},
    "lvsm_encoder_decoder": {"transformer": {"d": 32, "d_head": 8, "encoder_n_layer": 2, "decoder_n_layer": 2,
                                             "n_latent_vectors": 16}},
}


def tiny_config(name: str, patch: int = 8, image_size: int = 256):
    """A small model of family `name`; image_size only matters to code that reads it (loaders, the demo)."""
    model = {"class_name": name, "image_tokenizer": {"patch_size": patch, "image_size": image_size},
             "target_pose_tokenizer": {"patch_size": patch, "image_size": image_size}, **TINY[name]}
    return config_from_dict({"model": model})


def random_views(b: int, v: int, h: int = 32, w: int = 32, seed: int = 0):
    """images [b, v, 3, h, w], c2w [b, v, 4, 4] (random rotations, cameras near the origin), fxfycxcy."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, v, 3, h, w, generator=g)
    q, r = torch.linalg.qr(torch.randn(b, v, 3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # unique QR
    q[..., :, 0] *= torch.det(q).sign().unsqueeze(-1)  # det +1
    c2w = torch.eye(4).repeat(b, v, 1, 1)
    c2w[..., :3, :3] = q
    c2w[..., :3, 3] = torch.randn(b, v, 3, generator=g) * 0.5
    fxfycxcy = torch.tensor([0.9 * w, 0.9 * h, w / 2, h / 2]).repeat(b, v, 1)
    return images, c2w, fxfycxcy


@pytest.fixture
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.skip(f"reference vectors not found at {REFERENCE}")
    return REFERENCE
