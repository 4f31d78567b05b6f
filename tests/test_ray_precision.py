"""model.ray_precision: rays under autocast as the reference computed them, or exact fp32.

The reference (Ayakaee/Efficient-LVSM and Haian-Jin/LVSM) computes its rays inside
`torch.autocast("cuda", dtype=torch.bfloat16)` (train.py, inference.py call process_data there).
`_reference_rays` below re-derives its ProcessData.compute_rays (utils/data_utils.py) step by step,
in its own layout; the test runs it under the same CPU autocast as the code under test.
"""

import pytest
import torch
from einops import rearrange

from configs.schema import config_from_dict
from model import build_model
from model.tokens import posed_images, ray_map
from tests.conftest import TINY, random_views, tiny_config
from utils.geometry import compute_rays, plucker

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _reference_rays(c2w, fxfycxcy, h, w):
    """The reference's compute_rays, [b, v, 4, 4], [b, v, 4] -> ray_o, ray_d [b, v, 3, h, w]."""
    b, v = c2w.shape[:2]
    c2w, k = c2w.reshape(b * v, 4, 4), fxfycxcy.reshape(b * v, 4)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # int64 pixel indices
    x = x[None].expand(b * v, -1, -1).reshape(b * v, -1)
    y = y[None].expand(b * v, -1, -1).reshape(b * v, -1)
    x = (x + 0.5 - k[:, 2:3]) / k[:, 0:1]
    y = (y + 0.5 - k[:, 3:4]) / k[:, 1:2]
    d = torch.stack([x, y, torch.ones_like(x)], dim=2)  # [b*v, h*w, 3]
    d = torch.bmm(d, c2w[:, :3, :3].transpose(1, 2))  # autocast: bf16 on CUDA and CPU alike
    # torch.norm -> linalg_vector_norm, which CUDA autocast runs in fp32 (fp32_set_opt_dtype in
    # ATen/autocast_mode.h) and CPU autocast leaves in bf16: spell CUDA's policy out here.
    d = d / torch.norm(d.float(), dim=2, keepdim=True)  # bf16 / fp32 promotes to fp32
    o = c2w[:, :3, 3][:, None, :].expand_as(d)
    to_map = lambda t: rearrange(t, "(b v) (h w) c -> b v c h w", b=b, v=v, h=h, w=w)  # noqa: E731
    return to_map(o), to_map(d)


def _plucker_of(o, d):  # the reference's get_posed_input, default_plucker
    return torch.cat([torch.cross(o, d, dim=2), d], dim=2)


def test_reference_rays_under_autocast_match_the_reference_to_the_bit():
    images, c2w, k = random_views(2, 3, 64, 48)
    with torch.autocast(**BF16):
        ours = ray_map(c2w, k, 64, 48, "reference")
        ref_o, ref_d = _reference_rays(c2w, k, 64, 48)
        posed = posed_images(images, c2w, k, "reference")
    assert ref_d.dtype == ours.dtype == posed.dtype == torch.float32  # the map is fp32, as the reference's
    assert torch.equal(ours, _plucker_of(ref_o, ref_d))
    assert torch.equal(posed, torch.cat([images * 2.0 - 1.0, _plucker_of(ref_o, ref_d)], dim=2))


def test_fp32_rays_ignore_autocast_and_both_agree_without_it():
    _, c2w, k = random_views(2, 3, 32, 32)
    exact = plucker(*compute_rays(c2w, k, 32, 32))
    with torch.autocast(**BF16):
        assert torch.equal(ray_map(c2w, k, 32, 32, "fp32"), exact)
    assert torch.equal(ray_map(c2w, k, 32, 32, "reference"), exact)
    assert torch.equal(ray_map(c2w, k, 32, 32, "fp32"), exact)


def test_reference_rays_are_bf16_rounded_directions_at_256px():
    """The angle to the exact ray is nonzero and below half a degree (bf16: 8 mantissa bits)."""
    _, c2w, k = random_views(2, 3, 256, 256)
    with torch.autocast(**BF16):
        rounded = ray_map(c2w, k, 256, 256, "reference")[:, :, 3:]
    exact = compute_rays(c2w.double(), k.double(), 256, 256)[1]
    cos = (rounded.double() * exact).sum(2) / rounded.double().norm(dim=2)
    angle = torch.rad2deg(torch.acos(cos.clamp(max=1.0)))  # [b, v, h, w]
    assert 0.05 < angle.max().item() < 0.5
    assert (rounded.double().norm(dim=2) - 1).abs().max() < 1e-6  # still unit length (fp32 division)


def _config(name: str, precision: str):
    model = {"class_name": name, "image_tokenizer": {"patch_size": 8}, "target_pose_tokenizer": {"patch_size": 8},
             "ray_precision": precision, **TINY[name]}
    return config_from_dict({"model": model}).model


def test_models_use_the_key_and_reject_unknown_values():
    images, c2w, k = random_views(1, 3, 16, 16)
    args = (images[:, :2], c2w[:, :2], k[:, :2], c2w[:, 2:], k[:, 2:])
    torch.manual_seed(0)
    ref_model = build_model(tiny_config("efficient_lvsm").model).eval()
    fp32_model = build_model(_config("efficient_lvsm", "fp32")).eval()
    fp32_model.load_state_dict(ref_model.state_dict())
    with torch.no_grad(), torch.autocast(**BF16):
        assert not torch.equal(ref_model(*args), fp32_model(*args))
    with torch.no_grad():
        assert torch.equal(ref_model(*args), fp32_model(*args))
    with pytest.raises(ValueError, match=r"model.ray_precision='bf16'"):
        build_model(_config("lvsm_decoder_only", "bf16"))


@pytest.mark.parametrize("precision", ["reference", "fp32"])
def test_ray_map_compiles_as_one_graph_under_autocast(precision):
    torch._dynamo.reset()
    _, c2w, k = random_views(1, 2, 16, 16)
    fn = torch.compile(lambda a, b: ray_map(a, b, 16, 16, precision), backend="eager", fullgraph=True)
    with torch.autocast(**BF16):
        assert torch.equal(fn(c2w, k), ray_map(c2w, k, 16, 16, precision))
