"""Procedural scenes in the project's scene format, rendered by exact ray casting.

Two kinds:

- ``rooms``: a textured box room with 2-5 textured boxes standing on the floor (rotated about the
  vertical), seen by a camera walking through it the way real-estate videos do: forward along a
  smooth arc, turning slowly, a little pitch and sideways drift, never near a wall or a box.
- ``objects``: 2-4 textured spheres and boxes around the origin, seen from cameras on an orbit
  looking at the origin, frame i at azimuth 360 i / frames as the authors' Blender renders (so the
  object loader's groups of 8 frames are quarters of the orbit); images are RGBA with alpha the hit
  mask (RGB white where nothing is hit).

Every pixel's ray is intersected exactly with every primitive (slab method for boxes, the quadratic
for spheres) and the nearest hit wins, so occlusion is exact. Colours depend only on the surface
point (texture and a fixed directional shading), never on the view, so a point has the same colour
in every frame that sees it. World axes: y up. Rooms are written with OpenCV camera axes (x right,
y down, z forward), as RealEstate10K; objects with Blender/OpenGL axes (x right, y up, z backward),
as Objaverse renders, so the object loader's conversion is exercised. ``fxfycxcy`` in pixels,
pixel (x, y) centred at (x + 0.5, y + 0.5).

Scenes come from disjoint seed streams ``(seed, split, index)``. A `Style` sets how they look and
move: by default train and test draw textures from disjoint photo lists and pattern families
(`texture_sets`: held-out textures test generalization); ``textures="shared"`` draws both from all
of them (held-out scenes from the training distribution, as the quick start uses), and the texture
scale and the stretch of the walk the frames cover (the camera baseline between frames) can be scaled. `generate` records
its settings in OUT/generation.json and refuses to add scenes of other settings to a folder. Each scene is
written images first and its JSON last (atomically), and scenes whose JSON exists are skipped, so a
stopped run resumes where it stopped.

    python -m data.synthetic --out DIR --kind rooms --num_train 1000 --num_test 100 --workers 2
"""

import argparse
import json
import math
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.scene_format import write_text_atomic
from data.textures import SPLITS, pattern_texture, photo_texture, sample_texture, texture_sets

KINDS = ("rooms", "objects")
_EPS = 1e-9  # hits closer than this to the ray origin are ignored
_LIGHT = np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5])
_FACE_UV = ((2, 1), (0, 2), (0, 1))  # in-plane axes (u, v) of a face whose normal is axis 0, 1, 2
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # camera axes: flip y and z


# ----------------------------------------------------------------------------- scenes
TEXTURE_MODES = ("disjoint", "shared")


@dataclass(frozen=True)
class Style:
    """How scenes look and move. The defaults are the original scenes (the tests' data)."""

    textures: str = "disjoint"  # "disjoint": train and test textures from disjoint sets; "shared": both from all
    tile_scale: float = 1.0  # x the metres a texture spans before it repeats: larger is lower frequency
    walk_scale: float = 1.0  # the stretch of the rooms walk the frames cover (1: all of it): the camera baseline
    photo_fraction: float = 0.5  # share of materials textured with photos (the rest: patterns)
    laps: float = 0.0  # rooms: 0, the original arc (35-80 degrees); > 0, that many laps of the loop (long
    # walks that come back to where they were: streams of views)

    def __post_init__(self):
        if self.textures not in TEXTURE_MODES:
            raise ValueError(f"textures must be one of {list(TEXTURE_MODES)}, got {self.textures!r}")
        if min(self.tile_scale, self.walk_scale) <= 0 or not 0 <= self.photo_fraction <= 1 or self.laps < 0:
            raise ValueError(f"tile_scale and walk_scale must be > 0, photo_fraction in [0, 1] and laps >= 0, "
                             f"got {self}")


@dataclass
class Scene:
    """Geometry, materials and cameras of one scene. Material i has texture i, repeated every
    tile[i] metres, shifted by offset[i] repeats."""

    c2w: np.ndarray  # [f, 4, 4]
    fxfycxcy: np.ndarray  # [f, 4]
    textures: np.ndarray  # [m, TEX, TEX, 3] float32 in [0, 1]
    tile: np.ndarray  # [m]
    offset: np.ndarray  # [m, 2]
    room: np.ndarray | None  # [2, 3] low and high corners, seen from inside; its faces are materials 0-5
    boxes: np.ndarray  # [nb, 7] centre (3), half size (3), yaw about +y
    box_mat: np.ndarray  # [nb]
    spheres: np.ndarray  # [ns, 4] centre (3), radius
    sphere_mat: np.ndarray  # [ns]


def _materials(rng: np.random.Generator, split: str, n: int, tile: tuple[float, float], style: Style):
    if style.textures == "shared":
        (photos, patterns), (test_photos, test_patterns) = texture_sets("train"), texture_sets("test")
        photos, patterns = photos + test_photos, patterns + test_patterns
    else:
        photos, patterns = texture_sets(split)
    textures = [photo_texture(rng, photos[rng.integers(len(photos))]) if rng.random() < style.photo_fraction
                else pattern_texture(rng, patterns[rng.integers(len(patterns))]) for _ in range(n)]
    return np.stack(textures), rng.uniform(*tile, n) * style.tile_scale, rng.uniform(0, 1, (n, 2))


def _look(position: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """c2w [f, 4, 4] from positions and forward directions [f, 3], world up +y, no roll."""
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    c2w = np.tile(np.eye(4), (len(position), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, np.cross(forward, right), forward, position
    return c2w


def _intrinsics(rng, frames: int, size: int, fov_deg: tuple[float, float]) -> np.ndarray:
    f = size / 2 / math.tan(math.radians(rng.uniform(*fov_deg)) / 2)
    return np.tile([f, f, size / 2, size / 2], (frames, 1))


def _room_scene(rng: np.random.Generator, split: str, frames: int, size: int, style: Style) -> Scene:
    half = np.array([rng.uniform(2, 4), 0, rng.uniform(2, 4)])  # half width and depth, 4-8 m rooms
    height = rng.uniform(2.5, 3.5)
    margin, drift = 0.8, rng.uniform(0, 0.15)  # distance kept from the walls; sideways sway
    # The walk: an arc of an ellipse around a point near the middle, turning 35-80 degrees in all.
    room_xz = half[[0, 2]] - margin - drift
    centre = rng.uniform(-1, 1, 2) * np.maximum(room_xz - 1.2, 0)
    radii = rng.uniform(0.6, 1.0, 2) * (room_xz - np.abs(centre))
    s = np.linspace(0, style.walk_scale, frames)  # walk_scale 0.5: the first half of the walk, as densely
    start, sign, arc = rng.uniform(0, 2 * np.pi), rng.choice([-1, 1]), rng.uniform(0.6, 1.4)
    if style.laps:  # whole laps of the ellipse: every place is passed again, a little off the last pass
        arc = 2 * np.pi * style.laps / style.walk_scale
    phi = start + sign * arc * s
    sway = 1 + drift / radii.min() * np.sin(2 * np.pi * s * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi))
    x, z = centre[0] + radii[0] * sway * np.cos(phi), centre[1] + radii[1] * sway * np.sin(phi)
    y = rng.uniform(1.3, 1.7) + 0.03 * np.sin(2 * np.pi * s * 2 + rng.uniform(0, 2 * np.pi))
    position = np.stack([x, y, z], -1)
    heading = np.gradient(position[:, [0, 2]], axis=0) if frames > 1 else np.array([[0.0, 1.0]])
    yaw = np.arctan2(heading[:, 0], heading[:, 1]) + rng.uniform(-0.35, 0.35) + 0.15 * np.sin(
        2 * np.pi * s + rng.uniform(0, 2 * np.pi))
    pitch = rng.uniform(-0.1, 0.1) + 0.05 * np.sin(2 * np.pi * s + rng.uniform(0, 2 * np.pi))
    forward = np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], -1)
    boxes = []
    for _ in range(rng.integers(2, 6)):
        for _ in range(30):  # rejection sampling: keep boxes off the walk and inside the walls
            size_half = rng.uniform([0.2, 0.2, 0.2], [0.75, 1.0, 0.75])
            reach = np.hypot(size_half[0], size_half[2])  # footprint radius under any yaw
            if np.any(half[[0, 2]] <= reach):
                continue
            cx, cz = rng.uniform(-1, 1, 2) * (half[[0, 2]] - reach)
            if np.hypot(x - cx, z - cz).min() > reach + 0.35:
                boxes.append([cx, size_half[1], cz, *size_half, rng.uniform(0, np.pi)])
                break
    textures, tile, offset = _materials(rng, split, 6 + len(boxes), (0.8, 2.5), style)
    return Scene(_look(position, forward), _intrinsics(rng, frames, size, (50, 70)), textures, tile, offset,
                 np.array([[-half[0], 0, -half[2]], [half[0], height, half[2]]]),
                 np.array(boxes).reshape(-1, 7), 6 + np.arange(len(boxes)), np.zeros((0, 4)), np.zeros(0, int))


def _object_scene(rng: np.random.Generator, split: str, frames: int, size: int, style: Style) -> Scene:
    boxes, spheres = [], []
    for _ in range(rng.integers(2, 5)):
        centre = rng.normal(0, 0.25, 3)
        centre *= min(1.0, 0.35 / np.linalg.norm(centre))
        if rng.random() < 0.5:
            spheres.append([*centre, rng.uniform(0.15, 0.35)])
        else:
            boxes.append([*centre, *rng.uniform(0.1, 0.3, 3), rng.uniform(0, np.pi)])
    textures, tile, offset = _materials(rng, split, len(boxes) + len(spheres), (0.3, 1.0), style)
    # The authors' Blender orbit (objaverse-xl/scripts/rendering/blender_script.py, Efficient-LVSM
    # a88aed0): frame i at azimuth 360 i / frames, elevation 20 degrees, both jittered by up to 2
    # degrees, vertical FoV 49.1 degrees. One distance per scene (Blender draws one per frame), in
    # 2.2-3.0 instead of 1.5-2.8 as these objects span about 1.7 units, Blender's a unit cube.
    jitter = np.radians(2)
    azimuth = 2 * np.pi * np.arange(frames) / frames + rng.uniform(-jitter, jitter, frames)
    elevation = np.radians(20) + rng.uniform(-jitter, jitter, frames)
    position = rng.uniform(2.2, 3.0) * np.stack(
        [np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)], -1)
    return Scene(_look(position, -position), _intrinsics(rng, frames, size, (49.1, 49.1)), textures, tile, offset,
                 None, np.array(boxes).reshape(-1, 7), np.arange(len(boxes)), np.array(spheres).reshape(-1, 4),
                 len(boxes) + np.arange(len(spheres)))


def make_scene(kind: str, split: str, seed: int, index: int, frames: int, size: int, style: Style = Style()) -> Scene:
    """The scene `index` of `split`, a function of (seed, split, index) and the style only."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    return (_room_scene if kind == "rooms" else _object_scene)(rng, split, frames, size, style)


# ----------------------------------------------------------------------------- ray casting
def _yaw(v: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate [..., 3] about +y by the angle with this cosine and sine."""
    return np.stack([cos * v[..., 0] + sin * v[..., 2], v[..., 1], cos * v[..., 2] - sin * v[..., 0]], -1)


def _planar_uv(p: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """In-plane coordinates [n, 2] (metres) of points p [n, 3] on faces with normal `axis` [n]."""
    ua, va = np.array(_FACE_UV)[axis].T
    rows = np.arange(len(p))
    v = p[rows, va]
    return np.stack([p[rows, ua], np.where(va == 1, -v, v)], -1)  # -y: photos upright on walls


def cast(scene: Scene, origins: np.ndarray, dirs: np.ndarray):
    """Nearest hit of each ray. origins, dirs [n, 3] (dirs need not be unit).

    Returns t [n] (distance along the unit ray; inf for a miss), material [n] (-1 for a miss),
    uv [n, 2] surface coordinates in metres, normal [n, 3] unit.
    """
    n, f32 = len(dirs), np.float32  # float32: twice the speed, ~1e-6 m error at room scale
    d = (dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)).astype(f32)
    o = np.broadcast_to(origins, d.shape).astype(f32)
    rows = np.arange(n)
    t, mat, uv, normal = np.full(n, np.inf, f32), np.full(n, -1), np.zeros((n, 2), f32), np.zeros((n, 3), f32)

    def take(t_new, mat_new, uv_new, normal_new):
        closer = t_new < t
        t[closer], mat[closer], uv[closer], normal[closer] = (
            t_new[closer], mat_new[closer], uv_new[closer], normal_new[closer])

    safe = np.where(np.abs(d) < 1e-12, f32(1e-12), d)
    if scene.room is not None:  # from inside: the first wall each axis reaches, then the nearest
        room = scene.room.astype(f32)
        far = np.maximum((room[0] - o) / safe, (room[1] - o) / safe)  # [n, 3]
        axis = np.where(far[:, 0] < far[:, 1], 0, 1)
        axis = np.where(far[:, 2] < far[rows, axis], 2, axis)
        t_hit = far[rows, axis]
        high = d[rows, axis] > 0
        normal_new = np.zeros((n, 3), f32)
        normal_new[rows, axis] = np.where(high, -1.0, 1.0)  # facing into the room
        take(t_hit, 2 * axis + high, _planar_uv(o + t_hit[:, None] * d, axis), normal_new)
    if len(scene.boxes):  # slab method in each box's frame, all rays x all boxes at once, per axis
        boxes = scene.boxes.astype(f32)
        centre, half, cos, sin = boxes[:, :3], boxes[:, 3:6], np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        rel = [o[:, None, c] - centre[:, c] for c in range(3)]  # [n, nb] each
        o_l = [cos * rel[0] - sin * rel[2], rel[1], cos * rel[2] + sin * rel[0]]
        d_l = [cos * d[:, None, 0] - sin * d[:, None, 2], np.broadcast_to(d[:, None, 1], rel[1].shape),
               cos * d[:, None, 2] + sin * d[:, None, 0]]
        near, t_near, t_far = [], None, None
        for c in range(3):
            inv = 1 / np.where(np.abs(d_l[c]) < 1e-12, f32(1e-12), d_l[c])
            t0, t1 = (-half[:, c] - o_l[c]) * inv, (half[:, c] - o_l[c]) * inv
            near.append(np.minimum(t0, t1))
            t_near = near[c] if c == 0 else np.maximum(t_near, near[c])
            t_far = np.maximum(t0, t1) if c == 0 else np.minimum(t_far, np.maximum(t0, t1))
        t_near = np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)  # [n, nb]
        k = t_near.argmin(1)
        t_hit = t_near[rows, k]
        axis = np.stack([x[rows, k] for x in near], -1).argmax(-1)
        d_k = np.stack([x[rows, k] for x in d_l], -1)  # [n, 3]
        p_l = np.stack([x[rows, k] for x in o_l], -1) + np.where(np.isfinite(t_hit), t_hit, 0)[:, None] * d_k
        normal_l = np.zeros((n, 3), f32)
        normal_l[rows, axis] = -np.sign(d_k[rows, axis])  # the face turned towards the ray
        take(t_hit, scene.box_mat[k], _planar_uv(p_l, axis), _yaw(normal_l, cos[k], sin[k]))
    if len(scene.spheres):
        centre, radius = scene.spheres[:, :3].astype(f32), scene.spheres[:, 3].astype(f32)
        rel = o[:, None] - centre  # [n, ns, 3]
        b = np.einsum("nsc,nc->ns", rel, d)
        disc = b * b - (np.einsum("nsc,nsc->ns", rel, rel) - radius ** 2)
        t_all = -b - np.sqrt(np.maximum(disc, 0))
        t_all = np.where((disc >= 0) & (t_all > _EPS), t_all, np.inf)
        k = t_all.argmin(1)
        t_hit = t_all[rows, k]
        normal_new = (rel[rows, k] + np.where(np.isfinite(t_hit), t_hit, 0)[:, None] * d) / radius[k, None]
        uv_new = radius[k, None] * np.stack(
            [np.arctan2(normal_new[:, 2], normal_new[:, 0]), np.arccos(np.clip(normal_new[:, 1], -1, 1))], -1)
        take(t_hit, scene.sphere_mat[k], uv_new, normal_new)
    return t, mat, uv, normal


def shade(scene: Scene, mat: np.ndarray, uv: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """View-independent colour [n, 3] in [0, 1] of the hits from `cast` (white for misses)."""
    rgb = np.ones((len(mat), 3), np.float32)
    hit = mat >= 0
    m = mat[hit]
    coords = (uv[hit] / scene.tile[m, None] + scene.offset[m]).astype(np.float32)
    texel = sample_texture(scene.textures, m, coords)
    rgb[hit] = texel * (0.55 + 0.45 * np.abs(normal[hit] @ _LIGHT.astype(np.float32)))[:, None]
    return rgb


def pixel_rays(c2w: np.ndarray, fxfycxcy, size: int) -> tuple[np.ndarray, np.ndarray]:
    """World origins and directions [size * size, 3] of every pixel centre, row-major."""
    fx, fy, cx, cy = fxfycxcy
    y, x = np.mgrid[0:size, 0:size] + 0.5
    cam = np.stack([(x - cx) / fx, (y - cy) / fy, np.ones_like(x)], -1).reshape(-1, 3)
    dirs = cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], dirs.shape), dirs


def render(scene: Scene, frame: int, size: int) -> np.ndarray:
    """RGBA uint8 [size, size, 4] of one frame; alpha is the hit mask."""
    t, mat, uv, normal = cast(scene, *pixel_rays(scene.c2w[frame], scene.fxfycxcy[frame], size))
    rgb = np.round(shade(scene, mat, uv, normal) * 255)
    return np.concatenate([rgb, 255.0 * (mat >= 0)[:, None]], -1).astype(np.uint8).reshape(size, size, 4)


# ----------------------------------------------------------------------------- writing
def _write_if_changed(path: Path, text: str) -> None:
    if not (path.exists() and path.read_text(encoding="utf-8") == text):
        write_text_atomic(path, text)


def _write_scene(task: tuple) -> bool:
    """Render and write one scene unless its JSON exists; True if it was written."""
    out, kind, split, index, seed, frames, size, style = task
    name = f"{kind}_{index:05d}"
    meta = Path(out) / split / "metadata" / f"{name}.json"
    if meta.exists():
        return False
    scene = make_scene(kind, split, seed, index, frames, size, style)
    image_dir = Path(out) / split / "images" / name
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for f in range(frames):
        rgba = render(scene, f, size)
        Image.fromarray(rgba if kind == "objects" else rgba[..., :3]).save(image_dir / f"{f:05d}.png")
        c2w = scene.c2w[f] @ _OPENCV_TO_OPENGL if kind == "objects" else scene.c2w[f]  # as Blender writes
        rot, centre = c2w[:3, :3], c2w[:3, 3]
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = rot.T, -rot.T @ centre
        records.append({"image_path": f"../images/{name}/{f:05d}.png",
                        "fxfycxcy": scene.fxfycxcy[f].tolist(), "w2c": w2c.tolist()})
    write_text_atomic(meta, json.dumps({"scene_name": name, "frames": records}))
    return True


def evaluation_entry(seed: int, index: int, frames: int) -> dict:
    """Two context frames frames // 2 apart and three sorted targets strictly between them."""
    rng = np.random.default_rng([seed, 2, index])
    gap = frames // 2
    first = int(rng.integers(0, frames - gap))
    targets = np.sort(rng.choice(np.arange(first + 1, first + gap), 3, replace=False))
    return {"context": [first, first + gap], "target": [int(i) for i in targets]}


SETTINGS_FILE = "generation.json"


def normalized(settings: dict) -> dict:
    """Recorded settings with every Style field: one recorded before a field existed has its default."""
    if isinstance(settings.get("style"), dict):
        return {**settings, "style": {**asdict(Style()), **settings["style"]}}
    return settings


def check_settings(out: Path, settings: dict) -> None:
    """Record the settings of `out`'s scenes, or fail if it holds scenes of other settings."""
    path = out / SETTINGS_FILE
    if path.is_file():
        old = normalized(json.loads(path.read_text()))
        if old != settings:
            diff = ", ".join(f"{k}: {old.get(k)} there, {v} now" for k, v in settings.items() if old.get(k) != v)
            raise ValueError(f"{out} holds scenes generated with other settings ({diff}); choose another folder "
                             f"or remove it")
        return
    if any(out.glob("*/metadata/*.json")):
        raise ValueError(f"{out} holds scenes but no {SETTINGS_FILE} (generated before settings were recorded); "
                         "choose another folder or remove it")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=1))


def generate(out_dir, kind: str, num_train: int, num_test: int, frames: int = 32, size: int = 128,
             seed: int = 0, workers: int = 1, progress: bool = False, style: Style = Style()) -> dict:
    """Write the train and test splits (and test/evaluation_index.json) under out_dir.

    Returns counts: {"train", "test": scenes listed, "written": rendered now, "skipped": already there}.
    A folder generated with other settings (OUT/generation.json) is an error naming them.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if min(num_train, num_test) < 0 or seed < 0 or size < 1:
        raise ValueError(f"num_train, num_test, seed must be >= 0 and size >= 1, got "
                         f"{num_train}, {num_test}, {seed}, {size}")
    if frames < (8 if num_test else 1):
        raise ValueError(f"frames must be >= 8 for the evaluation index (>= 1 without test), got {frames}")
    out = Path(out_dir)
    check_settings(out, {"kind": kind, "frames": frames, "size": size, "seed": seed, "style": asdict(style)})
    counts = {"train": num_train, "test": num_test}
    tasks = [(str(out), kind, split, i, seed, frames, size, style) for split, n in counts.items() for i in range(n)]
    for split, n in counts.items():
        if n:
            (out / split / "metadata").mkdir(parents=True, exist_ok=True)
    bar = dict(total=len(tasks), desc=f"rendering {kind}", unit="scene", disable=not progress or len(tasks) < 20)
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            written = sum(tqdm(pool.imap_unordered(_write_scene, tasks, chunksize=4), **bar))
    else:
        written = sum(tqdm(map(_write_scene, tasks), **bar))
    for split, n in counts.items():
        if n:
            names = sorted(f"metadata/{kind}_{i:05d}.json" for i in range(n))
            _write_if_changed(out / split / "full_list.txt", "".join(f"{s}\n" for s in names))
    if num_test:
        index = {f"{kind}_{i:05d}": evaluation_entry(seed, i, frames) for i in range(num_test)}
        _write_if_changed(out / "test" / "evaluation_index.json", json.dumps(index, indent=1))
    return {**counts, "written": written, "skipped": len(tasks) - written}


def settings_of(kind: str, num_train: int, num_test: int, frames: int, size: int, seed: int, style: Style) -> dict:
    """The arguments of `generate` as plain data (a checkpoint stores them; generate_from_settings reads them)."""
    return {"kind": kind, "num_train": num_train, "num_test": num_test, "frames": frames, "size": size,
            "seed": seed, "style": asdict(style)}


def generate_from_settings(out_dir, settings: dict, train: bool = True, workers: int = 2,
                           progress: bool = True) -> dict:
    """`generate` with the arguments `settings_of` recorded; with train=False the held-out scenes only."""
    s = settings
    return generate(out_dir, s["kind"], s["num_train"] if train else 0, s["num_test"], frames=s["frames"],
                    size=s["size"], seed=s["seed"], workers=workers, progress=progress, style=Style(**s["style"]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (holds train/ and test/)")
    p.add_argument("--kind", choices=KINDS, default="rooms")
    p.add_argument("--num_train", type=int, default=1000)
    p.add_argument("--num_test", type=int, default=100)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--textures", choices=TEXTURE_MODES, default="disjoint",
                   help="disjoint: held-out scenes use textures never seen in training; shared: the same sets")
    p.add_argument("--tile_scale", type=float, default=1.0, help="x texture size: larger is lower frequency")
    p.add_argument("--walk_scale", type=float, default=1.0, help="stretch of the rooms walk the frames cover "
                   "(1: all): the camera baseline between frames")
    p.add_argument("--photo_fraction", type=float, default=0.5, help="share of photo textures (rest: patterns)")
    p.add_argument("--laps", type=float, default=0.0, help="rooms: laps of a loop through the room (0: the "
                   "original arc); with many --frames, long walks that revisit places (streams of views)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    style = Style(args.textures, args.tile_scale, args.walk_scale, args.photo_fraction, args.laps)
    counts = generate(args.out, args.kind, args.num_train, args.num_test, args.frames, args.size,
                      args.seed, args.workers, progress=True, style=style)
    seconds = time.perf_counter() - start
    print(f"{counts} in {seconds:.1f} s ({counts['written'] / max(seconds, 1e-9):.2f} scenes/s written)")
    return counts


if __name__ == "__main__":
    main()
