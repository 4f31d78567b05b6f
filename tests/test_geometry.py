"""Tests for utils/geometry.py: reference rays and pose normalization, round trips, trajectories."""

import math
from pathlib import Path

import pytest
import torch

from utils.geometry import (K_to_fxfycxcy, _quat_to_rotmat, _rotmat_to_quat, c2w_to_w2c, check_intrinsics, check_poses,
                            compute_rays, crop_intrinsics, fxfycxcy_to_K, interpolate_trajectory, invert_pose,
                            normalize_scene_poses, opencv_to_opengl, opengl_to_opencv, plucker, project_points,
                            resize_intrinsics, spiral_trajectory, w2c_to_c2w)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"reference folder {REFERENCE} is missing"
)
MODEL_FILES = ["efficient_lvsm.pt", "lvsm_decoder_only.pt", "lvsm_encoder_decoder.pt"]


def random_rotation(*shape, dtype=torch.float32, generator=None) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(*shape, 3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    q[..., :, 0] *= torch.sign(torch.linalg.det(q))[..., None]  # make det +1
    return q.to(dtype)


def random_poses(*shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=dtype).repeat(*shape, 1, 1)
    c2w[..., :3, :3] = random_rotation(*shape, dtype=dtype, generator=g)
    c2w[..., :3, 3] = torch.randn(*shape, 3, generator=g).to(dtype)
    return c2w


def axis_rotation(axis: str, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = torch.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def assert_rotations(c2w: torch.Tensor, atol=1e-5):
    r = c2w[..., :3, :3]
    torch.testing.assert_close(r.transpose(-1, -2) @ r, torch.eye(3).expand_as(r), atol=atol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(r.shape[:-2]), atol=atol, rtol=0)
    torch.testing.assert_close(c2w[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand_as(c2w[..., 3, :]))


# ----------------------------------------------------------------------------- rays


@needs_reference
@pytest.mark.parametrize("file", MODEL_FILES)
def test_rays_match_reference(file):
    d = torch.load(REFERENCE / file, weights_only=True)
    batch, v_in, v_t = d["batch"], d["num_input_views"], d["num_target_views"]
    h, w = batch["image"].shape[-2:]
    ray_o, ray_d = compute_rays(batch["c2w"], batch["fxfycxcy"], h, w)  # [b, v, 3, h, w]
    for part, views in (("input", slice(0, v_in)), ("target", slice(-v_t, None))):
        assert (ray_o[:, views] - d["ray_o"][part]).abs().max() < 1e-5, part
        assert (ray_d[:, views] - d["ray_d"][part]).abs().max() < 1e-5, part


def test_rays_shapes_dtypes_and_principal_ray():
    c2w = random_poses(2, 3)
    k = torch.tensor([20.0, 30.0, 8.5, 4.5]).expand(2, 3, 4)
    ray_o, ray_d = compute_rays(c2w, k, 10, 16)  # non-square
    assert ray_o.shape == ray_d.shape == (2, 3, 3, 10, 16) and ray_d.dtype == torch.float32
    torch.testing.assert_close(ray_d.norm(dim=2), torch.ones(2, 3, 10, 16))
    torch.testing.assert_close(ray_o[..., 4, 7], c2w[..., :3, 3])
    # The principal point (8.5, 4.5) is the centre of pixel (x=8, y=4): its ray is the optical axis.
    torch.testing.assert_close(ray_d[..., 4, 8], c2w[..., :3, 2])
    # One pixel to the right is 1 / fx further along the camera's x axis.
    d_cam = torch.nn.functional.normalize(torch.tensor([1 / 20, 0.0, 1.0]), dim=0)
    torch.testing.assert_close(ray_d[..., 4, 9], c2w[..., :3, :3] @ d_cam)
    ray_o64, ray_d64 = compute_rays(c2w.double(), k, 10, 16)
    assert ray_o64.dtype == ray_d64.dtype == torch.float64
    assert compute_rays(c2w.half(), k.half(), 4, 4)[1].dtype == torch.float32
    with pytest.raises(ValueError, match="fxfycxcy"):
        compute_rays(c2w, k[..., :3], 10, 16)


def test_plucker():
    ray_o, ray_d = compute_rays(random_poses(2), torch.tensor([[10.0, 10, 4, 4]] * 2), 8, 8)
    p = plucker(ray_o, ray_d)
    assert p.shape == (2, 6, 8, 8)
    torch.testing.assert_close(p[:, 3:], ray_d)
    # The moment o x d does not depend on which point of the line is the origin.
    torch.testing.assert_close(plucker(ray_o + 2.5 * ray_d, ray_d), p, atol=1e-5, rtol=0)
    assert (p[:, :3] * p[:, 3:]).sum(1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="ray_o"):
        plucker(ray_o, ray_d[:, :2])


# ----------------------------------------------------------------------------- intrinsics


def test_resize_and_crop_keep_points_on_the_same_pixel():
    c2w = random_poses(seed=3)
    k = torch.tensor([50.0, 60.0, 31.0, 25.0])
    p_cam = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]])  # [2, 3] in front of the camera
    points = p_cam @ c2w[:3, :3].T + c2w[:3, 3]  # [2, 3]
    uv, _ = project_points(points, c2w, k)
    sx, sy, left, top = 0.5, 0.75, 3, 7  # non-uniform resize of a 64 x 48 image to 32 x 36, then crop
    k2 = crop_intrinsics(resize_intrinsics(k, sx, sy), left, top)
    uv2, _ = project_points(points, c2w, k2)
    torch.testing.assert_close(uv2, uv * torch.tensor([sx, sy]) - torch.tensor([left, top]))


def test_resize_pixel_centre_convention():
    # Halving a 16 x 16 image: new pixel (0, 0) covers old pixels 0..1, its centre is old coordinate 1.0.
    c2w, k = random_poses(seed=1), torch.tensor([12.0, 14.0, 8.5, 7.0])
    _, ray_new = compute_rays(c2w, resize_intrinsics(k, 0.5, 0.5), 8, 8)
    uv = torch.tensor([1.0, 1.0])
    d_cam = torch.cat([(uv - k[2:]) / k[:2], torch.ones(1)])
    torch.testing.assert_close(ray_new[:, 0, 0], c2w[:3, :3] @ d_cam / d_cam.norm())


def test_K_round_trip():
    k = torch.tensor([[50.0, 60.0, 31.0, 25.0], [1.0, 2.0, 3.0, 4.0]])
    K = fxfycxcy_to_K(k)
    assert K.shape == (2, 3, 3)
    torch.testing.assert_close(K[0], torch.tensor([[50.0, 0, 31], [0, 60, 25], [0, 0, 1]]))
    torch.testing.assert_close(K_to_fxfycxcy(K), k)


def test_project_points_inverts_rays():
    c2w = random_poses(2, seed=5)
    k = torch.tensor([[20.0, 22.0, 6.0, 5.0], [18.0, 18.0, 7.0, 4.0]])
    h, w = 9, 13
    ray_o, ray_d = compute_rays(c2w, k, h, w)
    depth_along_ray = 0.5 + torch.rand(2, 1, h, w)
    points = (ray_o + depth_along_ray * ray_d).flatten(2).transpose(1, 2)  # [2, h*w, 3]
    uv, depth = project_points(points, c2w, k)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    centres = torch.stack([xs, ys], -1).flatten(0, 1)  # [h*w, 2]
    torch.testing.assert_close(uv, centres.expand(2, -1, -1), atol=1e-4, rtol=0)
    assert (depth > 0).all()


# ----------------------------------------------------------------------------- poses


@needs_reference
def test_normalize_scene_poses_matches_reference():
    d = torch.load(REFERENCE / "pose_normalization.pt", weights_only=True)
    assert len(d["c2w_in"]) == len(d["c2w_out"]) > 0
    for c2w_in, c2w_out in zip(d["c2w_in"], d["c2w_out"]):
        before = c2w_in.clone()
        out = normalize_scene_poses(c2w_in, d["scene_scale_factor"])
        assert (out - c2w_out).abs().max() < 1e-5
        assert torch.equal(c2w_in, before), "input was modified"


def test_normalize_scene_poses_batched_and_errors():
    c2w = random_poses(3, 5)
    out = normalize_scene_poses(c2w)
    for i in range(3):
        torch.testing.assert_close(out[i], normalize_scene_poses(c2w[i]))
    assert out[..., :3, 3].abs().amax(dim=(-1, -2)).sub(1 / 1.35).abs().max() < 1e-6
    assert_rotations(out)
    with pytest.raises(ValueError, match=r"\[5, 3, 4\]"):
        normalize_scene_poses(c2w[0, :, :3])
    bad = c2w[0].clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        normalize_scene_poses(bad)


def test_invert_pose_round_trips():
    c2w = random_poses(4, 2, seed=7)
    w2c = c2w_to_w2c(c2w)
    torch.testing.assert_close(w2c, torch.linalg.inv(c2w), atol=1e-5, rtol=0)
    torch.testing.assert_close(w2c @ c2w, torch.eye(4).expand_as(c2w), atol=1e-5, rtol=0)
    torch.testing.assert_close(w2c_to_c2w(w2c), c2w, atol=1e-6, rtol=0)
    assert invert_pose is c2w_to_w2c


def test_opengl_opencv_conversion():
    c2w_gl = random_poses(3, seed=2)
    c2w_cv = opengl_to_opencv(c2w_gl)
    torch.testing.assert_close(opencv_to_opengl(c2w_cv), c2w_gl)
    torch.testing.assert_close(opengl_to_opencv(c2w_cv), c2w_gl)  # its own inverse
    assert_rotations(c2w_cv)
    # A point 2 units in front of an OpenGL camera is at z = -2 in its frame, z = +2 in OpenCV's.
    point = (c2w_gl[:, :3, :3] @ torch.tensor([0.1, 0.2, -2.0]) + c2w_gl[:, :3, 3])[:, None]  # [3, 1, 3]
    _, depth_cv = project_points(point, c2w_cv, torch.tensor([10.0, 10, 5, 5]).expand(3, 4))
    torch.testing.assert_close(depth_cv, torch.full((3, 1), 2.0))
    _, depth_gl = project_points(point, c2w_gl, torch.tensor([10.0, 10, 5, 5]).expand(3, 4))
    assert (depth_gl < 0).all()


def test_check_poses():
    c2w = random_poses(2, 3)
    assert check_poses(c2w) is None
    with pytest.raises(ValueError, match=r"cams.*\[2, 3, 3, 4\]"):
        check_poses(c2w[..., :3, :], name="cams")
    bad = c2w.clone()
    bad[0, 0, 0, 0], bad[1, 2, 1, 3] = float("nan"), float("inf")
    with pytest.raises(ValueError, match="2 non-finite"):
        check_poses(bad)
    bad = c2w.clone()
    bad[0, 1, 3, 0] = 0.01
    with pytest.raises(ValueError, match="last row"):
        check_poses(bad)
    bad = c2w.clone()
    bad[1, 1, :3, 0] *= 1.01
    with pytest.raises(ValueError, match="orthonormal"):
        check_poses(bad)
    with pytest.raises(ValueError, match="reflection"):
        check_poses(c2w * torch.tensor([1.0, 1, -1, 1]))


def test_check_intrinsics():
    assert check_intrinsics(torch.tensor([[10.0, 10, 5, 5]])) is None
    with pytest.raises(ValueError, match=r"K.*\[3\]"):
        check_intrinsics(torch.ones(3), name="K")
    with pytest.raises(ValueError, match="1 non-finite"):
        check_intrinsics(torch.tensor([10.0, float("nan"), 5, 5]))
    with pytest.raises(ValueError, match="fx > 0"):
        check_intrinsics(torch.tensor([10.0, -1.0, 5, 5]))


# ----------------------------------------------------------------------------- trajectories


def test_quaternion_round_trip_including_half_turns():
    rots = torch.cat([
        random_rotation(64, generator=torch.Generator().manual_seed(0)),
        torch.stack([axis_rotation(a, math.pi) for a in "xyz"]),
        torch.diag(torch.tensor([-1.0, -1.0, 1.0]))[None],
        torch.eye(3)[None],
    ])
    torch.testing.assert_close(_quat_to_rotmat(_rotmat_to_quat(rots)), rots, atol=1e-5, rtol=0)


def test_interpolate_trajectory_endpoints_and_count():
    c2w = random_poses(4, seed=4)
    k = torch.rand(4, 4) + 1
    for n in (2, 7, 30):
        out, k_out = interpolate_trajectory(c2w, k, n)
        assert out.shape == (n, 4, 4) and k_out.shape == (n, 4)
        torch.testing.assert_close(out[0], c2w[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out[-1], c2w[-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(k_out[[0, -1]], k[[0, -1]])
        assert_rotations(out)
    out, _ = interpolate_trajectory(c2w, k, 7)  # t = 0, 0.5, 1, ...: every other frame is an input
    torch.testing.assert_close(out[::2], c2w, atol=1e-5, rtol=0)
    out, k_out = interpolate_trajectory(c2w[:1], k[:1], 5)
    assert torch.equal(out, c2w[:1].expand(5, 4, 4)) and k_out.shape == (5, 4)


def test_interpolate_trajectory_slerp_halfway():
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, :3] = axis_rotation("y", math.pi / 2)
    c2w[1, :3, 3] = torch.tensor([2.0, 0, 4])
    k = torch.tensor([[10.0, 10, 5, 5], [20.0, 30, 6, 7]])
    out, k_out = interpolate_trajectory(c2w, k, 3)
    torch.testing.assert_close(out[1, :3, :3], axis_rotation("y", math.pi / 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, :3, 3], torch.tensor([1.0, 0, 2]))
    torch.testing.assert_close(k_out[1], k.mean(0))
    # Shortest arc: from +170 to -170 degrees about z passes through 180, not through 0.
    c2w[0, :3, :3] = axis_rotation("z", math.radians(170))
    c2w[1, :3, :3] = axis_rotation("z", math.radians(-170))
    out, _ = interpolate_trajectory(c2w, k, 3)
    torch.testing.assert_close(out[1, :3, :3], axis_rotation("z", math.pi), atol=1e-6, rtol=0)


def test_interpolate_trajectory_loop():
    c2w = random_poses(3, seed=6)
    k = torch.rand(3, 4) + 1
    out, k_out = interpolate_trajectory(c2w, k, 12, loop=True)
    assert out.shape == (12, 4, 4)
    assert_rotations(out)
    torch.testing.assert_close(out[::4], c2w, atol=1e-5, rtol=0)  # 4 frames per segment, 3 segments
    assert not torch.allclose(out[-1], c2w[0], atol=1e-3)  # no duplicate of the first frame
    # The last segment heads back to camera 0: the last frame is 3/4 of the way from camera 2.
    torch.testing.assert_close(out[-1, :3, 3], c2w[2, :3, 3] + 0.75 * (c2w[0, :3, 3] - c2w[2, :3, 3]))
    torch.testing.assert_close(k_out[-1], k[2] + 0.75 * (k[0] - k[2]))


def make_rig(v=5, seed=0):
    """Cameras spread sideways and a little vertically, all looking at roughly (0, 0, 3)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack([torch.linspace(-1, 1, v), 0.2 * torch.randn(v, generator=g), torch.zeros(v)], -1)
    targets = torch.tensor([0.0, 0, 3]) + 0.05 * torch.randn(v, 3, generator=g)  # [v, 3]
    fwd = torch.nn.functional.normalize(targets - centres, dim=-1)
    down = torch.tensor([0.0, 1, 0]).expand_as(fwd)
    right = torch.nn.functional.normalize(torch.cross(down, fwd, dim=-1), dim=-1)
    c2w = torch.eye(4).repeat(v, 1, 1)
    c2w[:, :3, :3] = torch.stack([right, torch.cross(fwd, right, dim=-1), fwd], -1)
    c2w[:, :3, 3] = centres
    return c2w


def test_spiral_trajectory():
    c2w = make_rig()
    mean_fwd = torch.nn.functional.normalize(c2w[:, :3, 2].mean(0), dim=0)
    focus = c2w[:, :3, 3].mean(0) + 2.5 * mean_fwd  # the documented focus point
    out = spiral_trajectory(c2w, 40, rotations=2, focus_distance=2.5)
    assert out.shape == (40, 4, 4)
    assert_rotations(out)
    to_focus = torch.nn.functional.normalize(focus - out[:, :3, 3], dim=-1)
    torch.testing.assert_close(out[:, :3, 2], to_focus, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:20], out[20:], atol=1e-5, rtol=0)  # two laps: periodic
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    assert (out[:, :3, 1] @ torch.tensor([0.0, 1, 0]) > 0.9).all()  # down stays down
    # In the mean camera's frame the orbit stays within the inputs' spread (half of it vertically).
    down = c2w[:, :3, 1].mean(0)
    right = torch.nn.functional.normalize(torch.cross(down, mean_fwd, dim=0), dim=0)
    frame = torch.stack([right, torch.cross(mean_fwd, right, dim=0), mean_fwd], -1)  # [3, 3]
    local_in = (c2w[:, :3, 3] - c2w[:, :3, 3].mean(0)) @ frame  # [v, 3]
    local_out = (out[:, :3, 3] - c2w[:, :3, 3].mean(0)) @ frame  # [40, 3]
    limit = local_in.abs().amax(0) * torch.tensor([1.0, 0.5, 0.0]) + 1e-5
    assert (local_out.abs() <= limit).all()
    assert (local_out.abs().amax(0)[:2] > 0.99 * limit[:2]).all()  # and uses all of it


def test_spiral_trajectory_default_focus():
    c2w = make_rig()
    out = spiral_trajectory(c2w, 16)  # the optical axes meet near (0, 0, 3)
    hit = out[:, :3, 3] + 3.0 * out[:, :3, 2] / out[:, 2, 2:3]  # each axis at world z = 3
    assert hit[:, :2].abs().max() < 0.15
    parallel = torch.eye(4).repeat(3, 1, 1)
    parallel[:, 0, 3] = torch.tensor([-1.0, 0, 1])
    out = spiral_trajectory(parallel, 8)  # parallel axes: focus 1.0 ahead
    to_focus = torch.nn.functional.normalize(torch.tensor([0.0, 0, 1]) - out[:, :3, 3], dim=-1)
    torch.testing.assert_close(out[:, :3, 2], to_focus)
    with pytest.raises(ValueError, match="focus_distance"):
        spiral_trajectory(c2w, 8, focus_distance=-1.0)
