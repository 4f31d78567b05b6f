"""Camera geometry: rays, Plücker coordinates, intrinsics, pose normalization, trajectories.

Conventions (stated once here; other conventions are converted at the boundary):

- ``c2w`` is a camera-to-world 4x4 matrix with OpenCV camera axes: x right, y down, z forward.
  Its columns 0, 1, 2 are the camera's right, down and forward axes in world coordinates and
  column 3 is the camera centre.
- ``fxfycxcy`` holds the intrinsics ``[fx, fy, cx, cy]`` in pixels of the image they go with.
- Pixel ``(x, y)`` (column x, row y) has its centre at continuous coordinates ``(x + 0.5, y + 0.5)``;
  the image spans ``[0, w] x [0, h]``.
- Image sizes ``h, w`` are passed in, never guessed from the intrinsics.

Functions are batched over leading dimensions ``...`` where the docstring shows them.
"""

import functools
import math

import torch
import torch.nn.functional as F

# A camera spread below this (scene units) is treated as none; normalized scenes span about ±0.74.
_MIN_RADIUS = 1e-3
# Focus depth used when the optical axes do not converge: about the scene's size once
# normalize_scene_poses has put every camera within 1 / 1.35 of the origin.
_DEFAULT_FOCUS = 1.0


def _check_shape(x: torch.Tensor, tail: tuple, name: str) -> None:
    if x.ndim < len(tail) or tuple(x.shape[x.ndim - len(tail):]) != tail:
        want = "[..., " + ", ".join(str(s) for s in tail) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")


def _float_dtype(*xs: torch.Tensor) -> torch.dtype:
    """At least float32; float64 stays float64."""
    return functools.reduce(torch.promote_types, [x.dtype for x in xs], torch.float32)


# ----------------------------------------------------------------------------- rays
def compute_rays(c2w: torch.Tensor, fxfycxcy: torch.Tensor, h: int, w: int):
    """Rays through every pixel centre.

    c2w [..., 4, 4], fxfycxcy [..., 4] (leading dims broadcast) -> (ray_o, ray_d), each
    [..., 3, h, w]: the camera centre, and the unit world direction through pixel centre
    (x + 0.5, y + 0.5). Computed in float32, or float64 if an input is float64.

    The operations are those of the reference (ProcessData.compute_rays in utils/data_utils.py of
    both reference repos), so an active autocast rounds where the reference's did: the rotation is
    a bmm, which autocast runs in its low-precision dtype; the norm is taken in float32, as CUDA
    autocast does for it (linalg_vector_norm is in ATen's fp32_set_opt_dtype list), and the
    division promotes back to float32. Outside autocast all of it is float32 (or float64).
    """
    _check_shape(c2w, (4, 4), "c2w")
    _check_shape(fxfycxcy, (4,), "fxfycxcy")
    dtype = _float_dtype(c2w, fxfycxcy)
    lead = torch.broadcast_shapes(c2w.shape[:-2], fxfycxcy.shape[:-1])
    c2w = c2w.to(dtype).expand(*lead, 4, 4).reshape(-1, 4, 4)  # [N, 4, 4]
    k = fxfycxcy.to(dtype).expand(*lead, 4).reshape(-1, 4)  # [N, 4]
    rows = torch.arange(h, dtype=dtype, device=c2w.device) + 0.5  # pixel centres
    cols = torch.arange(w, dtype=dtype, device=c2w.device) + 0.5
    ys, xs = torch.meshgrid(rows, cols, indexing="ij")  # [h, w] each
    x_cam = (xs.reshape(1, -1) - k[:, 2:3]) / k[:, 0:1]  # [N, h*w]
    y_cam = (ys.reshape(1, -1) - k[:, 3:4]) / k[:, 1:2]  # [N, h*w]
    d_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)  # [N, h*w, 3]
    ray_d = torch.bmm(d_cam, c2w[:, :3, :3].transpose(1, 2))  # [N, h*w, 3]: autocast dtype under autocast
    norm_dtype = torch.promote_types(ray_d.dtype, torch.float32)
    ray_d = ray_d / torch.linalg.vector_norm(ray_d, dim=-1, keepdim=True, dtype=norm_dtype)  # [N, h*w, 3]
    ray_d = ray_d.reshape(*lead, h, w, 3).movedim(-1, -3).contiguous()  # [..., 3, h, w]
    ray_o = c2w[:, :3, 3].reshape(*lead, 3, 1, 1).expand(ray_d.shape).contiguous()  # [..., 3, h, w]
    return ray_o, ray_d


def plucker(ray_o: torch.Tensor, ray_d: torch.Tensor) -> torch.Tensor:
    """Plücker coordinates: ray_o, ray_d [..., 3, h, w] -> [..., 6, h, w] = (o x d, d)."""
    if ray_o.shape != ray_d.shape or ray_o.ndim < 3 or ray_o.shape[-3] != 3:
        raise ValueError(f"ray_o and ray_d must both be [..., 3, h, w], "
                         f"got {list(ray_o.shape)} and {list(ray_d.shape)}")
    return torch.cat([torch.cross(ray_o, ray_d, dim=-3), ray_d], dim=-3)


# ----------------------------------------------------------------------------- intrinsics
def resize_intrinsics(fxfycxcy: torch.Tensor, scale_x, scale_y) -> torch.Tensor:
    """Intrinsics [..., 4] after resizing the image by scale_x = new_w / old_w, scale_y = new_h / old_h.

    Exact under the pixel-centre convention: continuous coordinates (edge at 0) scale by the factor.
    """
    _check_shape(fxfycxcy, (4,), "fxfycxcy")
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    return torch.stack([fx * scale_x, fy * scale_y, cx * scale_x, cy * scale_y], dim=-1)


def crop_intrinsics(fxfycxcy: torch.Tensor, left, top) -> torch.Tensor:
    """Intrinsics [..., 4] after cropping the image to start at column `left`, row `top`."""
    _check_shape(fxfycxcy, (4,), "fxfycxcy")
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    return torch.stack([fx, fy, cx - left, cy - top], dim=-1)


def fxfycxcy_to_K(fxfycxcy: torch.Tensor) -> torch.Tensor:
    """[..., 4] -> [..., 3, 3] pinhole matrix."""
    _check_shape(fxfycxcy, (4,), "fxfycxcy")
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack(r, -1) for r in ((fx, zero, cx), (zero, fy, cy), (zero, zero, one))]
    return torch.stack(rows, dim=-2)  # [..., 3, 3]


def K_to_fxfycxcy(K: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] pinhole matrix -> [..., 4] (skew is dropped)."""
    _check_shape(K, (3, 3), "K")
    return torch.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]], dim=-1)


def project_points(points_world: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor):
    """Project world points into a camera.

    points_world [..., n, 3], c2w [..., 4, 4], fxfycxcy [..., 4] -> (uv [..., n, 2], depth [..., n]):
    continuous pixel coordinates (pixel (x, y) has its centre at (x + 0.5, y + 0.5)) and the
    z-depth in the camera. uv is meaningless where depth <= 0 (behind the camera).
    """
    _check_shape(points_world, (3,), "points_world")
    _check_shape(c2w, (4, 4), "c2w")
    _check_shape(fxfycxcy, (4,), "fxfycxcy")
    w2c = invert_pose(c2w)
    p_cam = torch.einsum("...ij,...nj->...ni", w2c[..., :3, :3], points_world)
    p_cam = p_cam + w2c[..., None, :3, 3]  # [..., n, 3]
    depth = p_cam[..., 2]  # [..., n]
    uv = p_cam[..., :2] / depth[..., None] * fxfycxcy[..., None, :2]
    uv = uv + fxfycxcy[..., None, 2:]  # [..., n, 2]
    return uv, depth


# ----------------------------------------------------------------------------- poses
def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Rigid inverse of [..., 4, 4]: (R, t) -> (R^T, -R^T t)."""
    _check_shape(T, (4, 4), "T")
    r_t = T[..., :3, :3].transpose(-1, -2)  # [..., 3, 3]
    t = -(r_t @ T[..., :3, 3:])  # [..., 3, 1]
    out = torch.zeros_like(T)
    out[..., :3, :3], out[..., :3, 3:], out[..., 3, 3] = r_t, t, 1.0
    return out


c2w_to_w2c = invert_pose
w2c_to_c2w = invert_pose


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """c2w [..., 4, 4] with OpenGL/Blender camera axes (x right, y up, z backward) -> OpenCV axes.

    Right-multiplies by diag(1, -1, -1, 1), i.e. flips the camera's y and z columns; its own inverse.
    """
    _check_shape(c2w, (4, 4), "c2w")
    return c2w * c2w.new_tensor([1.0, -1.0, -1.0, 1.0])


opencv_to_opengl = opengl_to_opencv


def check_poses(c2w: torch.Tensor, name: str = "c2w") -> None:
    """Raise ValueError unless c2w is [..., 4, 4], finite, last row [0, 0, 0, 1] (tol 1e-4)
    and with a proper rotation (R^T R = I within 1e-3, det > 0)."""
    _check_shape(c2w, (4, 4), name)
    where = f"{name} of shape {list(c2w.shape)}"
    bad = (~torch.isfinite(c2w)).sum().item()
    if bad:
        raise ValueError(f"{where} has {bad} non-finite entries")
    if c2w.numel() == 0:
        return
    last = (c2w[..., 3, :] - c2w.new_tensor([0.0, 0.0, 0.0, 1.0])).abs().max().item()
    if last > 1e-4:
        raise ValueError(f"{where} must have last row [0, 0, 0, 1], off by up to {last:.3g}")
    r = c2w[..., :3, :3].double()
    err = (r.transpose(-1, -2) @ r - torch.eye(3, dtype=r.dtype, device=r.device)).abs().max().item()
    if err > 1e-3:
        raise ValueError(f"{where} must have an orthonormal rotation, R^T R is off I by up to {err:.3g}")
    if (torch.linalg.det(r) < 0).any():
        raise ValueError(f"{where} has a reflection (det < 0), not a rotation")


def check_intrinsics(fxfycxcy: torch.Tensor, name: str = "fxfycxcy") -> None:
    """Raise ValueError unless fxfycxcy is [..., 4], finite, with fx > 0 and fy > 0."""
    _check_shape(fxfycxcy, (4,), name)
    where = f"{name} of shape {list(fxfycxcy.shape)}"
    bad = (~torch.isfinite(fxfycxcy)).sum().item()
    if bad:
        raise ValueError(f"{where} has {bad} non-finite entries")
    if (fxfycxcy[..., :2] <= 0).any():
        raise ValueError(f"{where} must have fx > 0 and fy > 0, "
                         f"smallest is {fxfycxcy[..., :2].min().item():.3g}")


def _mean_frame(c2w: torch.Tensor):
    """Mean camera of [..., v, 4, 4]: (right, down, forward, centre), each [..., 3]."""
    centre = c2w[..., :3, 3].mean(-2)
    forward = F.normalize(c2w[..., :3, 2].mean(-2), dim=-1)
    down = c2w[..., :3, 1].mean(-2)
    right = F.normalize(torch.cross(down, forward, dim=-1), dim=-1)
    down = F.normalize(torch.cross(forward, right, dim=-1), dim=-1)  # re-orthogonalized
    return right, down, forward, centre


def _frame_to_pose(right, down, forward, centre) -> torch.Tensor:
    """Columns [..., 3] each -> c2w [..., 4, 4]."""
    top = torch.stack([right, down, forward, centre], dim=-1)  # [..., 3, 4]
    last = top.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*top.shape[:-2], 1, 4)
    return torch.cat([top, last], dim=-2)


def normalize_scene_poses(c2w: torch.Tensor, scene_scale_factor: float = 1.35) -> torch.Tensor:
    """The reference scene normalization of [v, 4, 4] (or [b, v, 4, 4], each sample on its own).

    Re-expresses the cameras in the mean camera's frame (centre = mean camera centre, axes from the
    mean forward and down axes), then scales translations so the largest |coordinate| is
    1 / scene_scale_factor. Returns a new tensor of the same shape; the input is not modified.
    """
    if c2w.ndim not in (3, 4) or tuple(c2w.shape[-2:]) != (4, 4):
        raise ValueError(f"c2w must have shape [v, 4, 4] or [b, v, 4, 4], got {list(c2w.shape)}")
    if not torch.isfinite(c2w).all():
        raise ValueError(f"c2w of shape {list(c2w.shape)} has non-finite entries")
    c2w = c2w.to(_float_dtype(c2w))
    return apply_normalization(c2w, *scene_normalization(c2w, scene_scale_factor))


def scene_normalization(c2w: torch.Tensor, scene_scale_factor: float = 1.35) -> tuple[torch.Tensor, torch.Tensor]:
    """What `normalize_scene_poses` does to these cameras [..., v, 4, 4]: (world to mean camera
    [..., 4, 4], scale [...]), so that other cameras can be put in the same frame (a stream normalized
    by its first views)."""
    avg_pose = _frame_to_pose(*_mean_frame(c2w))  # [..., 4, 4]
    to_mean = invert_pose(avg_pose)
    out = to_mean[..., None, :, :] @ c2w  # [..., v, 4, 4]
    return to_mean, scene_scale_factor * out[..., :3, 3].abs().flatten(-2).amax(-1)


def apply_normalization(c2w: torch.Tensor, to_mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cameras [..., v, 4, 4] in the frame `scene_normalization` gave: to_mean @ c2w, translations / scale."""
    out = to_mean[..., None, :, :].to(c2w.dtype) @ c2w
    out[..., :3, 3] /= scale[..., None, None].to(c2w.dtype)
    return out


# ----------------------------------------------------------------------------- trajectories
def _rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotations -> [..., 4] unit quaternions (w, x, y, z)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = R.flatten(-2).unbind(-1)  # row-major
    # 4 |q_i| from the diagonal; solving from the largest one avoids dividing by a tiny number.
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                           1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)  # [..., 4]
    s = 2 * four_sq.clamp_min(0).sqrt()  # [..., 4] = 4 |q_i|
    cands = torch.stack([
        torch.stack([s[..., 0] ** 2 / 4, m21 - m12, m02 - m20, m10 - m01], -1) / s[..., 0, None],
        torch.stack([m21 - m12, s[..., 1] ** 2 / 4, m01 + m10, m02 + m20], -1) / s[..., 1, None],
        torch.stack([m02 - m20, m01 + m10, s[..., 2] ** 2 / 4, m12 + m21], -1) / s[..., 2, None],
        torch.stack([m10 - m01, m02 + m20, m12 + m21, s[..., 3] ** 2 / 4], -1) / s[..., 3, None],
    ], dim=-2)  # [..., 4 candidates, 4]
    best = s.argmax(-1)[..., None, None].expand(*s.shape[:-1], 1, 4)
    return F.normalize(cands.gather(-2, best).squeeze(-2), dim=-1)


def _quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions (w, x, y, z) -> [..., 3, 3] rotations."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, dim=-2)


def _slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Shortest-arc slerp of [..., 4] unit quaternions at t [...]."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # q and -q are the same rotation; take the short way
    theta, t = torch.acos(dot.abs().clamp(max=1.0)), t[..., None]
    sin = torch.sin(theta)
    near = sin < 1e-6  # nearly equal rotations: lerp is exact to first order and avoids 0 / 0
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / torch.where(near, 1.0, sin))
    w1 = torch.where(near, t, torch.sin(t * theta) / torch.where(near, 1.0, sin))
    return F.normalize(w0 * q0 + w1 * q1, dim=-1)


def _check_path_args(c2w: torch.Tensor, num_frames: int) -> None:
    if c2w.ndim != 3 or tuple(c2w.shape[1:]) != (4, 4) or c2w.shape[0] < 1:
        raise ValueError(f"c2w must have shape [v, 4, 4] with v >= 1, got {list(c2w.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def interpolate_trajectory(c2w: torch.Tensor, fxfycxcy: torch.Tensor, num_frames: int,
                           loop: bool = False):
    """A camera path through c2w [v, 4, 4] with intrinsics fxfycxcy [v, 4].

    Piecewise between consecutive cameras: rotation by slerp, translation and intrinsics linearly;
    frames are spread evenly over the path. Without loop the first frame is camera 0 and the last
    camera v - 1; with loop the path returns to camera 0 and stops one step short of it, so the
    video repeats seamlessly. v = 1 gives num_frames copies.
    Returns (c2w [num_frames, 4, 4], fxfycxcy [num_frames, 4]).
    """
    _check_path_args(c2w, num_frames)
    if tuple(fxfycxcy.shape) != (c2w.shape[0], 4):
        raise ValueError(f"fxfycxcy must have shape [{c2w.shape[0]}, 4] to match c2w, "
                         f"got {list(fxfycxcy.shape)}")
    v = c2w.shape[0]
    if v == 1:
        return c2w.expand(num_frames, 4, 4).clone(), fxfycxcy.expand(num_frames, 4).clone()
    dtype = _float_dtype(c2w, fxfycxcy)
    c2w, fxfycxcy = c2w.to(dtype), fxfycxcy.to(dtype)
    if loop:
        idx_next = torch.arange(1, v + 1, device=c2w.device) % v
        t = torch.arange(num_frames, dtype=dtype, device=c2w.device) * (v / num_frames)  # [num_frames]
    else:
        idx_next = torch.arange(1, v, device=c2w.device)
        t = torch.linspace(0, v - 1, num_frames, dtype=dtype, device=c2w.device)  # [num_frames]
    seg = t.floor().long().clamp(max=len(idx_next) - 1)  # [num_frames]; t = v - 1 ends the last one
    alpha = t - seg  # [num_frames] in [0, 1]
    a, b = seg, idx_next[seg]
    q = _rotmat_to_quat(c2w[:, :3, :3])  # [v, 4]
    rot = _quat_to_rotmat(_slerp(q[a], q[b], alpha))  # [num_frames, 3, 3]

    def lerp(x: torch.Tensor) -> torch.Tensor:  # [v, ...] -> [num_frames, ...]
        return x[a] + alpha.view(-1, *([1] * (x.ndim - 1))) * (x[b] - x[a])

    pos = lerp(c2w[:, :3, 3])  # [num_frames, 3]
    out = _frame_to_pose(*rot.unbind(-1), pos)  # [num_frames, 4, 4]
    return out, lerp(fxfycxcy)


def _axes_convergence_depth(c2w: torch.Tensor, centre, forward) -> float:
    """Depth along `forward` from `centre` of the point nearest to all optical axes, or the
    default when the axes are near parallel (no well-defined point) or meet behind the cameras."""
    d = F.normalize(c2w[:, :3, 2].double(), dim=-1)  # [v, 3]
    eye = torch.eye(3, dtype=d.dtype, device=d.device)
    proj = eye - d[:, :, None] * d[:, None, :]  # [v, 3, 3]: projectors onto each axis' normal plane
    A, rhs = proj.sum(0), (proj @ c2w[:, :3, 3:].double()).sum(0)
    eig = torch.linalg.eigvalsh(A)
    if eig[0] < 1e-2 * eig[-1]:
        return _DEFAULT_FOCUS
    point = torch.linalg.solve(A, rhs).squeeze(-1)
    depth = ((point - centre.double()) * forward.double()).sum().item()
    return depth if math.isfinite(depth) and depth > _MIN_RADIUS else _DEFAULT_FOCUS


def spiral_trajectory(c2w: torch.Tensor, num_frames: int, radius_scale: float = 1.0, rotations: int = 1,
                      vertical_scale: float = 0.5, focus_distance: float | None = None) -> torch.Tensor:
    """An elliptical orbit around the mean camera of c2w [v, 4, 4], looking at a focus point.

    Frame k sits at centre + r_x cos(t) right + vertical_scale r_y sin(t) down, with
    t = 2 pi rotations k / num_frames (so the video loops seamlessly), where centre, right, down
    and forward form the mean camera (as in normalize_scene_poses) and r_x, r_y are radius_scale
    times the largest |offset| of the camera centres along right and down (at least 1e-3).
    Every frame looks at focus = centre + focus_distance * forward, its down axis kept as close to
    the mean down as looking at the focus allows. focus_distance defaults to the depth of the point
    nearest all optical axes, or 1.0 (about the size of a normalized scene) when the axes are near
    parallel or meet behind the cameras. Returns c2w [num_frames, 4, 4].
    """
    _check_path_args(c2w, num_frames)
    c2w = c2w.to(_float_dtype(c2w))
    right, down, forward, centre = _mean_frame(c2w)  # [3] each
    if focus_distance is None:
        focus_distance = _axes_convergence_depth(c2w, centre, forward)
    if not focus_distance > 0:
        raise ValueError(f"focus_distance must be > 0, got {focus_distance}")
    offsets = c2w[:, :3, 3] - centre  # [v, 3]
    r_x = radius_scale * max((offsets @ right).abs().max().item(), _MIN_RADIUS)
    r_y = radius_scale * max((offsets @ down).abs().max().item(), _MIN_RADIUS)
    t = torch.arange(num_frames, dtype=c2w.dtype, device=c2w.device)
    t = t * (2 * math.pi * rotations / num_frames)  # [num_frames]; stops one step short of a lap
    pos = centre + r_x * t.cos()[:, None] * right
    pos = pos + vertical_scale * r_y * t.sin()[:, None] * down  # [num_frames, 3]
    focus = centre + focus_distance * forward  # [3]
    fwd = F.normalize(focus - pos, dim=-1)  # [num_frames, 3]
    rgt = F.normalize(torch.cross(down.expand_as(fwd), fwd, dim=-1), dim=-1)
    dwn = torch.cross(fwd, rgt, dim=-1)
    return _frame_to_pose(rgt, dwn, fwd, pos)
