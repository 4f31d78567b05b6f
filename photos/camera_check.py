"""Checks that make a wrong camera convention visible: epipolar geometry, a sanity picture, and a
test for camera layouts no capture of one scene produces.

- `cameras.png`: distinctive pixels of the first input view, and their epipolar lines in the other
  inputs (fundamental matrix from the two cameras). With the right convention each line passes
  through the matching point; a wrong one (OpenGL read as OpenCV, c2w read as w2c) misses it. A
  top-down plot of camera centres and viewing directions, in the mean camera's frame, closes it.
- `layout_problems`: cameras back to back (each behind the other, opposite viewing directions) or
  optical axes that meet behind every camera, as a flipped z axis makes of an inward-looking
  capture. A forward-facing capture with flipped axes keeps a plausible layout: only the picture
  (lines through the wrong points) shows it.
- `convention_fit` / `better_reading`: the photos' own verdict. Points matched between pairs of
  input views (normalized cross-correlation, checked both ways) must lie on each other's epipolar
  lines; the median distance under each reading of the file (OpenCV/OpenGL axes, c2w/w2c) shows
  whether another reading fits clearly better, on forward and sideways captures alike.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from utils.geometry import fxfycxcy_to_K, invert_pose, project_points
from utils.images import to_uint8

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]  # distinct on photos (Sasha Trubetskoy's palette)
PANEL_HEIGHT = 256  # small images are enlarged to about this height so lines stay visible
MAX_OTHER_VIEWS = 7
OPPOSITE_COS = -0.5  # viewing directions more than 120 degrees apart
RAY_DEPTHS = torch.logspace(-3, 3, 256)  # along a ray, in normalized scene units (cameras within ~0.74)
CONDITION = 0.05  # smallest / largest eigenvalue for a well-defined meeting point of the optical axes


# ----------------------------------------------------------------------------- epipolar geometry
def fundamental_matrix(c2w_a: torch.Tensor, k_a: torch.Tensor, c2w_b: torch.Tensor, k_b: torch.Tensor) -> torch.Tensor:
    """F [3, 3] with x_b^T F x_a = 0 for the homogeneous pixel coordinates (continuous, pixel centres
    at +0.5) of one world point seen by camera a (c2w [4, 4], fxfycxcy [4]) and camera b."""
    rel = invert_pose(c2w_b.double()) @ c2w_a.double()  # a's camera frame -> b's
    r, t = rel[:3, :3], rel[:3, 3]
    zero = t.new_zeros(())
    t_cross = torch.stack([torch.stack([zero, -t[2], t[1]]), torch.stack([t[2], zero, -t[0]]),
                           torch.stack([-t[1], t[0], zero])])
    essential = t_cross @ r
    return torch.linalg.inv(fxfycxcy_to_K(k_b.double())).T @ essential @ torch.linalg.inv(fxfycxcy_to_K(k_a.double()))


def epipolar_lines(fmat: torch.Tensor, uv_a: torch.Tensor) -> torch.Tensor:
    """Lines [n, 3] (a, b, c: a x + b y + c = 0) in image b of points uv_a [n, 2] of image a."""
    ones = uv_a.new_ones(len(uv_a), 1)
    return torch.cat([uv_a.double(), ones.double()], -1) @ fmat.T


def epipolar_distance(fmat: torch.Tensor, uv_a: torch.Tensor, uv_b: torch.Tensor) -> torch.Tensor:
    """Pixel distance [n] of points uv_b [n, 2] in image b to the epipolar lines of uv_a [n, 2]."""
    lines = epipolar_lines(fmat, uv_a)
    ones = uv_b.new_ones(len(uv_b), 1).double()
    return (torch.cat([uv_b.double(), ones], -1) * lines).sum(-1).abs() / lines[:, :2].norm(dim=-1)


# ----------------------------------------------------------------------------- layout
def centres_coincide(c2w: torch.Tensor) -> bool:
    """Whether all cameras c2w [n, 4, 4] (n >= 2) sit at one point: no baseline to see depth from
    (and nothing normalize_scene_poses can scale). Inward-looking cameras with w2c read as c2w do."""
    centre = c2w[:, :3, 3].double()
    spread = (centre - centre.mean(0)).norm(dim=-1).max()
    return len(c2w) > 1 and bool(spread <= 1e-6 * max(1.0, float(centre.norm(dim=-1).max())))


def layout_problems(c2w: torch.Tensor) -> list[str]:
    """Signs that cameras c2w [n, 4, 4] look away from each other; [] when none."""
    if len(c2w) < 2:
        return []
    centre, fwd = c2w[:, :3, 3].double(), F.normalize(c2w[:, :3, 2].double(), dim=-1)  # [n, 3] each
    ahead = ((centre[None] - centre[:, None]) * fwd[:, None]).sum(-1)  # [i, j]: depth of centre j in camera i
    upper = torch.ones_like(ahead, dtype=torch.bool).triu(1)
    opposite = (fwd @ fwd.T < OPPOSITE_COS) & upper
    away = int((opposite & (ahead < 0) & (ahead.T < 0)).sum())
    facing = int((opposite & (ahead > 0) & (ahead.T > 0)).sum())
    problems = []
    if away and away >= 2 * facing:
        problems.append(f"{away} camera pairs are back to back (each behind the other), {facing} face each other")
    proj = torch.eye(3, dtype=fwd.dtype) - fwd[:, :, None] * fwd[:, None, :]  # [n, 3, 3]
    lhs, rhs = proj.sum(0), (proj @ centre[:, :, None]).sum(0)
    eig = torch.linalg.eigvalsh(lhs)
    if eig[0] > CONDITION * eig[-1]:
        meet = torch.linalg.solve(lhs, rhs)[:, 0]  # the point nearest to every optical axis
        depth = ((meet - centre) * fwd).sum(-1)
        if (depth < 0).all():
            problems.append("the optical axes meet behind every camera")
    return problems


# ----------------------------------------------------------------------------- the picture
def distinctive_pixels(image: torch.Tensor, cols: int = 3, rows: int = 2) -> torch.Tensor:
    """The strongest corner (Shi-Tomasi response) of each cell of a cols x rows grid over image
    [3, h, w], so the points spread over the view; flat cells give none. -> uv [k, 2], pixel
    centres in continuous coordinates."""
    gray = image.double().mean(0).numpy()
    h, w = gray.shape
    gy, gx = np.gradient(gray)

    def box(a: np.ndarray) -> np.ndarray:  # 3x3 sum: the structure tensor's window
        p = np.pad(a, 1, mode="edge")
        return sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))

    ixx, iyy, ixy = box(gx * gx), box(gy * gy), box(gx * gy)
    half_trace = (ixx + iyy) / 2
    response = half_trace - np.sqrt(np.maximum(half_trace ** 2 - (ixx * iyy - ixy ** 2), 0))  # smaller eigenvalue
    margin = max(2, min(h, w) // 16)  # corners at the border leave the other views first
    response[:margin], response[-margin:], response[:, :margin], response[:, -margin:] = -1, -1, -1, -1
    chosen = []
    for r in range(rows):
        for c in range(cols):
            top, left = r * h // rows, c * w // cols
            cell = response[top:(r + 1) * h // rows, left:(c + 1) * w // cols]
            y, x = np.unravel_index(int(cell.argmax()), cell.shape)
            if cell[y, x] > 1e-12:
                chosen.append((left + x, top + y))
    return torch.tensor(chosen, dtype=torch.float64).reshape(-1, 2) + 0.5


def project_ray(c2w_a: torch.Tensor, k_a: torch.Tensor, c2w_b: torch.Tensor, k_b: torch.Tensor,
                uv_a: torch.Tensor, depths: torch.Tensor):
    """Points at `depths` [d] along the rays of pixels uv_a [n, 2] of camera a, projected into
    camera b: (uv [n, d, 2], in front of camera b [n, d]). Their visible part is the half of the
    epipolar line a correct camera pair puts the match on."""
    fx, fy, cx, cy = k_a.double().tolist()
    cam = torch.stack([(uv_a[:, 0] - cx) / fx, (uv_a[:, 1] - cy) / fy, torch.ones(len(uv_a), dtype=torch.float64)], -1)
    ray = cam.double() @ c2w_a[:3, :3].double().T  # [n, 3]
    points = c2w_a[:3, 3].double() + depths.double()[None, :, None] * ray[:, None]  # [n, d, 3]
    uv, depth = project_points(points.reshape(-1, 3), c2w_b.double(), k_b.double())
    return uv.reshape(len(uv_a), -1, 2), depth.reshape(len(uv_a), -1) > 0


def _panel(image: torch.Tensor, scale: int, label: str) -> Image.Image:
    panel = Image.fromarray(to_uint8(image)).resize((image.shape[-1] * scale, image.shape[-2] * scale), Image.NEAREST)
    ImageDraw.Draw(panel).text((3, 2), label, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return panel


def _line_ends(line, size: tuple[int, int]) -> np.ndarray:
    """Two points [2, 2] of a x + b y + c = 0 on the edges of a panel of size (w, h)."""
    a, b, c = line
    w, h = size
    if abs(b) >= abs(a):  # closer to horizontal: solve for y at the left and right edges
        return np.array([(x, -(a * x + c) / b) for x in (0.0, float(w))])
    return np.array([(-(b * y + c) / a, y) for y in (0.0, float(h))])


def _draw_epipolar(draw: ImageDraw.ImageDraw, line, uv: np.ndarray, front: np.ndarray, size, colour) -> None:
    """The epipolar line thin, and thick where the ray's points lie in front of both cameras."""
    ends = _line_ends(line, size)
    draw.line([tuple(p) for p in ends], fill=colour, width=1)
    if not front.any():
        return
    along = ends[1] - ends[0]
    s = np.clip((uv[front] - ends[0]) @ along / (along @ along), 0, 1)  # an interval: depth is affine along the ray
    draw.line([tuple(ends[0] + s.min() * along), tuple(ends[0] + s.max() * along)], fill=colour, width=4)


def _top_down(c2w_in: torch.Tensor, c2w_t: torch.Tensor, side: int) -> Image.Image:
    """Camera centres and viewing directions seen from above the mean camera (x right, forward up)."""
    panel = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    cams = [(c, (0, 90, 200)) for c in c2w_in] + [(c, (240, 120, 0)) for c in c2w_t]
    xz = torch.stack([c[[0, 2], 3] for c, _ in cams]).double()  # [n, 2]
    extent = max(float((xz.max(0).values - xz.min(0).values).max()), 1e-6)
    arrow = 0.15 * extent
    lo, scale = xz.min(0).values - 0.2 * extent, 0.95 * side / (1.4 * extent)

    def to_px(p) -> tuple[float, float]:
        return float((p[0] - lo[0]) * scale), float(side - (p[1] - lo[1]) * scale)

    for (c, colour), p in zip(cams, xz):
        tip = p + arrow * F.normalize(c[[0, 2], 2].double(), dim=0)
        draw.line([to_px(p), to_px(tip)], fill=colour, width=2)
        x, y = to_px(p)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    draw.text((3, 2), "top view: inputs blue, targets orange", fill=(0, 0, 0))
    draw.text((3, side - 26), "thick lines (in front of both cameras)\nmust pass through the marked points",
              fill=(0, 0, 0))
    return panel


def camera_picture(images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor, names: list[str],
                   target_c2w: torch.Tensor) -> Image.Image:
    """The sanity picture of images [v, 3, h, w] with cameras c2w [v, 4, 4], fxfycxcy [v, 4]: points in
    view 0, their epipolar lines in up to MAX_OTHER_VIEWS others, the top view (targets [v_t, 4, 4] too)."""
    h, w = images.shape[-2:]
    scale = max(1, round(PANEL_HEIGHT / h))
    uv = distinctive_pixels(images[0])
    panels = [_panel(images[0], scale, f"0 {Path(names[0]).name}")]
    draw = ImageDraw.Draw(panels[0])
    for (x, y), colour in zip((uv * scale).tolist(), COLOURS):
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=colour, width=2)
    for j in range(1, min(len(images), MAX_OTHER_VIEWS + 1)):
        panel = _panel(images[j], scale, f"{j} {Path(names[j]).name}")
        lines = epipolar_lines(fundamental_matrix(c2w[0], fxfycxcy[0], c2w[j], fxfycxcy[j]), uv)
        ray_uv, front = project_ray(c2w[0], fxfycxcy[0], c2w[j], fxfycxcy[j], uv, RAY_DEPTHS)
        for i, (line, colour) in enumerate(zip(lines.tolist(), COLOURS)):
            if abs(line[0]) + abs(line[1]) > 1e-12:  # zero where camera j sits on the point's ray
                _draw_epipolar(ImageDraw.Draw(panel), (line[0], line[1], line[2] * scale),
                               ray_uv[i].numpy() * scale, front[i].numpy(), panel.size, colour)
        panels.append(panel)
    panels.append(_top_down(c2w, target_c2w, h * scale))
    cols = min(5, len(panels))
    rows = [panels[i:i + cols] for i in range(0, len(panels), cols)]
    canvas = Image.new("RGB", (max(sum(p.width for p in r) for r in rows), h * scale * len(rows)), (0, 0, 0))
    for r, row in enumerate(rows):
        x = 0
        for panel in row:
            canvas.paste(panel, (x, r * h * scale))
            x += panel.width
    return canvas


# ----------------------------------------------------------------------------- the photos' own verdict
CHECK_SIDE = 160  # images are shrunk to at most this many pixels a side for matching
MIN_NCC, MIN_NCC_MARGIN = 0.8, 0.05  # a match: correlation at least this, and this above the runner-up
MIN_MATCHES = 8  # fewer over all pairs: the photos do not decide
CLEARLY_BETTER = 0.5  # another reading's median epipolar error at most this fraction of the current one's
MIN_ERROR_PX = 0.5  # ... and the current one's above this, in check pixels (matches are to the pixel)
MAX_PAIRS = 12


def _windows(gray: np.ndarray, r: int) -> np.ndarray:
    """Zero-mean unit-norm patches [h - 2r, w - 2r, (2r+1)^2] of a grey image, one per interior pixel."""
    win = np.lib.stride_tricks.sliding_window_view(gray, (2 * r + 1, 2 * r + 1))
    win = win.reshape(*win.shape[:2], -1).astype(np.float32)
    win = win - win.mean(-1, keepdims=True)
    return win / np.maximum(np.linalg.norm(win, axis=-1, keepdims=True), 1e-6)


def _best(scores: np.ndarray, shape: tuple[int, int], r: int):
    """For scores [k, n] over a window grid of `shape`: (best index [k], best [k], runner-up outside
    the best's neighbourhood [k])."""
    best = scores.argmax(1)
    by, bx = np.unravel_index(best, shape)
    ys, xs = np.unravel_index(np.arange(scores.shape[1]), shape)
    near = (np.abs(ys[None] - by[:, None]) <= r) & (np.abs(xs[None] - bx[:, None]) <= r)
    second = np.where(near, -1.0, scores).max(1)
    return best, scores[np.arange(len(best)), best], second


def match_points(image_a: torch.Tensor, image_b: torch.Tensor, cols: int = 6, rows: int = 4):
    """Matches between two images [3, h, w] by normalized cross-correlation of patches around the
    distinctive pixels of a: kept when the correlation is high, clearly above any other place, and
    the match's best place back in a is the starting pixel. -> (uv_a [k, 2], uv_b [k, 2]), pixel
    centres in continuous coordinates."""
    gray_a, gray_b = (im.double().mean(0).numpy() for im in (image_a, image_b))
    h, w = gray_a.shape
    r = max(2, round(min(h, w) / 40))
    uv = distinctive_pixels(image_a, cols, rows)
    xy = (uv - 0.5).round().long().numpy()
    xy = xy[(xy[:, 0] >= r) & (xy[:, 0] < w - r) & (xy[:, 1] >= r) & (xy[:, 1] < h - r)]
    if not len(xy):
        return torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, 2, dtype=torch.float64)
    win_a, win_b = _windows(gray_a, r), _windows(gray_b, r)
    patches = win_a[xy[:, 1] - r, xy[:, 0] - r]  # [k, p]
    best, score, second = _best(patches @ win_b.reshape(-1, win_b.shape[-1]).T, win_b.shape[:2], r)
    back, _, _ = _best(win_b.reshape(-1, win_b.shape[-1])[best] @ win_a.reshape(-1, win_a.shape[-1]).T,
                       win_a.shape[:2], r)
    by, bx = np.unravel_index(best, win_b.shape[:2])
    ay, ax = np.unravel_index(back, win_a.shape[:2])
    keep = ((score >= MIN_NCC) & (score - second >= MIN_NCC_MARGIN)
            & (np.abs(ax + r - xy[:, 0]) <= 1) & (np.abs(ay + r - xy[:, 1]) <= 1))
    uv_a = torch.from_numpy(xy[keep].astype(np.float64)) + 0.5
    uv_b = torch.from_numpy(np.stack([bx + r, by + r], -1)[keep].astype(np.float64)) + 0.5
    return uv_a, uv_b


def shrink_for_check(images: torch.Tensor, fxfycxcy: torch.Tensor):
    """Images [v, 3, h, w] at most CHECK_SIDE a side, with their intrinsics [v, 4] scaled to match."""
    h, w = images.shape[-2:]
    scale = min(1.0, CHECK_SIDE / max(h, w))
    if scale == 1.0:
        return images, fxfycxcy
    size = (max(8, round(h * scale)), max(8, round(w * scale)))
    small = F.interpolate(images.float(), size=size, mode="area")
    factor = fxfycxcy.new_tensor([size[1] / w, size[0] / h, size[1] / w, size[0] / h])
    return small, fxfycxcy * factor


def readings(c2w: torch.Tensor, convention: str, pose: str) -> dict[tuple[str, str], torch.Tensor]:
    """c2w [n, 4, 4] (OpenCV axes) read from a file with `convention` axes and `pose` matrices ->
    the c2w each of the four readings (convention, pose) of the same file gives."""
    flip = c2w.new_tensor([1.0, -1.0, -1.0, 1.0])  # OpenGL <-> OpenCV: its own inverse
    as_stored = c2w * flip if convention == "opengl" else c2w
    raw = as_stored if pose == "c2w" else invert_pose(as_stored)
    out = {}
    for conv in ("opencv", "opengl"):
        for p in ("c2w", "w2c"):
            m = raw if p == "c2w" else invert_pose(raw)
            out[(conv, p)] = m * flip if conv == "opengl" else m
    return out


@dataclass
class ConventionFit:
    matches: int  # point matches over all pairs of views
    median_px: dict[tuple[str, str], float]  # (convention, pose) -> median epipolar error, check pixels


def convention_fit(images: torch.Tensor, fxfycxcy: torch.Tensor, c2w: torch.Tensor, convention: str,
                   pose: str) -> ConventionFit:
    """Match points between pairs of views (images [v, 3, h, w], fxfycxcy [v, 4]) and measure their
    median epipolar distance under each reading of the camera file (c2w [v, 4, 4] as read now)."""
    images, fxfycxcy = shrink_for_check(images, fxfycxcy)
    candidates = readings(c2w.double(), convention, pose)
    errors = {key: [] for key in candidates}
    matches = 0
    # Neighbours in the given order first: captures are usually ordered, and near views match best.
    pairs = [(i, i + gap) for gap in range(1, len(images)) for i in range(len(images) - gap)][:MAX_PAIRS]
    for i, j in pairs:
        uv_i, uv_j = match_points(images[i], images[j])
        if not len(uv_i):
            continue
        matches += len(uv_i)
        for key, cams in candidates.items():
            dist = epipolar_distance(fundamental_matrix(cams[i], fxfycxcy[i], cams[j], fxfycxcy[j]), uv_i, uv_j)
            errors[key].append(dist)
    median = {key: float(torch.cat(d).nanmedian()) if d else float("nan") for key, d in errors.items()}
    return ConventionFit(matches, median)


def better_reading(fit: ConventionFit, convention: str, pose: str) -> tuple[str, str] | None:
    """The reading the photos fit clearly better than (convention, pose), or None."""
    if fit.matches < MIN_MATCHES:
        return None
    current = fit.median_px[(convention, pose)]
    best = min(fit.median_px, key=lambda k: fit.median_px[k] if np.isfinite(fit.median_px[k]) else np.inf)
    if best == (convention, pose) or not np.isfinite(fit.median_px[best]):
        return None
    if current > MIN_ERROR_PX and fit.median_px[best] <= CLEARLY_BETTER * current:
        return best
    return None
