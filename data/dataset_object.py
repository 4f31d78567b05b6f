"""Object-level dataset (Objaverse-style renders around the origin), as the authors' object loader.

The reference is Efficient-LVSM's `data/dataset_object.py` (class ObjaverseDataset, added in commit
823c68a, removed in 8980294; read with `git show 8980294^:data/dataset_object.py`). Its renders come
from its Blender scripts (objaverse-xl/scripts/rendering/blender_script*.py, commit a88aed0): 512x512
RGBA frames `NNN.png` on a camera orbit at a fixed elevation, frame i at azimuth 360 i / n degrees,
a fixed 49.1 degree vertical field of view, and `NNN.npy`, the 3x4 world-to-camera matrix in
Blender camera axes (Zero123's get_3x4_RT_matrix_from_blender). The reference loader reads that
matrix as camera-to-world (it appends [0, 0, 0, 1] and flips y and z), which puts every camera of an
orbit on one line, at (0, 0, -distance); here it is read as what the scripts write, world-to-camera.

What a training sample is, by default as the reference:

- views (`view_sampler="groups"`): one frame drawn from each of the first 4 groups of 8 frames
  (0-7, 8-15, 16-23, 24-31, cut at the frame count; an empty group gives none), i.e. one per quarter
  of the orbit, then random other frames up to `num_views`; a scene of exactly `num_views` frames
  gives all of them in order. The first views are the model's inputs (data.dataset_scene.split_views).
  `view_sampler="random"`: `num_views` distinct frames drawn uniformly (this project's former default).
- images: resized and cropped as scene frames (data.dataset_scene.prepared_size); alpha is dropped as
  PIL's convert("RGB") does (the colour stored under transparent pixels stays), or, with
  `background` set, the image is alpha-composited on that RGB colour.
- cameras: c2w converted to OpenCV axes (`camera_convention="opengl"`: Blender's), then normalized
  over the sampled views like scenes (mean camera at the identity, largest |translation| =
  1 / scene_scale_factor; `normalize_poses=False` keeps them as written), then times `scale`.
- intrinsics: the frame's own `fxfycxcy` (scene JSON), or for render folders, which have none, the
  fixed field of view: fx = fy = h / (2 tan(fov / 2)), cx = w / 2, cy = h / 2 for an h x w frame.

Sources (one per line of the list file, or every sub-folder when the dataset path is a folder, or
the values of a JSON {uid: folder} as the reference's `training.list_path`): a scene JSON in this
project's format (data.scene_format) or a render folder holding NNN.png and NNN.npy.

A sample: image [v, 3, h, w] in [0, 1], c2w [v, 4, 4] (OpenCV), fxfycxcy [v, 4] (pixels), index
[v, 2] (frame, scene), scene_name, skipped. Views depend on (seed, epoch, idx) only.

Evaluation (`evaluation=True`), as that loader evaluates (its `if_inference` mode):
- objects: the first `eval_objects` (100) entries of the list, in its order (a JSON's key order), of
  which those whose render folder holds more than 28 entries (os.listdir: PNGs, NPYs and anything
  else; for a scene JSON, here, more than 14 frames, the same for NNN.png + NNN.npy pairs). The others
  are named in `excluded` with the reason. A folder's entries are not sorted by the reference
  (os.listdir); here a folder of render folders is read sorted.
- views (inputs first): an object of exactly 14 frames gives frames 0, 1, 2, 3 and then random others
  up to `num_views`; any other count, the training draw above. The reference draws from Python's
  global RNG, different at every run; here from (seed, idx): the same views at every run.
- a sample that fails to load raises (the evaluation names it and goes on), never replaced.
"""

import json
import math
import os
import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from data.dataset_scene import prepare_intrinsics, prepared_size
from data.scene_format import load_with_retries, read_scene_json, read_scene_list, resolve_path
from utils.geometry import check_poses, invert_pose, normalize_scene_poses, opengl_to_opencv

GROUP_SIZE, NUM_GROUPS = 8, 4  # reference dataset_object.py: `group_size = 8`, `for i in range(4)`
# Its evaluation mode: the first 100 entries of the list, folders of more than 28 entries, and for
# objects of 14 frames the inputs 0-3 (`if self.inference and num_total_views == 14`).
EVAL_OBJECTS, EVAL_MIN_ENTRIES, EVAL_FIXED_FRAMES, EVAL_FIRST = 100, 28, 14, 4
VIEW_SAMPLERS = ("groups", "random")
CAMERA_CONVENTIONS = ("opengl", "opencv")


def select_views(num_frames: int, num_views: int, rng: random.Random, sampler: str = "groups") -> list[int]:
    """Frame indices of one training sample (see the module docstring); raises ValueError if the
    scene has fewer than num_views frames (the reference would return fewer views)."""
    if num_frames < num_views:
        raise ValueError(f"{num_frames} frames, fewer than num_views={num_views}")
    if sampler == "random":
        return rng.sample(range(num_frames), num_views)
    if num_frames == num_views:  # the reference writes range(32), its num_views
        return list(range(num_frames))
    groups = [range(g * GROUP_SIZE, min((g + 1) * GROUP_SIZE, num_frames)) for g in range(NUM_GROUPS)]
    # With num_views < 4 the reference keeps all 4 picks (more views than asked); we keep num_views.
    picks = [rng.choice(group) for group in groups if len(group)][:num_views]
    others = [i for i in range(num_frames) if i not in picks]
    return picks + rng.sample(others, num_views - len(picks))


def evaluation_views(num_frames: int, num_views: int, rng: random.Random, sampler: str = "groups") -> list[int]:
    """Frame indices of an evaluated object (see the module docstring): 0-3 and random others for
    objects of 14 frames, else `select_views`. With num_views < 4 the first num_views of 0-3 (the
    reference would keep all 4)."""
    if num_frames != EVAL_FIXED_FRAMES:
        return select_views(num_frames, num_views, rng, sampler)
    if num_frames < num_views:
        raise ValueError(f"{num_frames} frames, fewer than num_views={num_views}")
    first = list(range(min(EVAL_FIRST, num_views)))
    return first + rng.sample(range(len(first), num_frames), num_views - len(first))


def fixed_fov_intrinsics(width: int, height: int, fov_deg: float) -> list[float]:
    """fxfycxcy of a `width` x `height` frame rendered with vertical field of view `fov_deg` and
    square pixels (Blender sensor_fit VERTICAL); the reference's values for its 512 x 512 frames."""
    f = height / 2 / math.tan(math.radians(fov_deg) / 2)
    return [f, f, width / 2, height / 2]


def load_render(path: Path, fxfycxcy: Optional[Sequence[float]], image_size: int, patch: int,
                square_crop: bool, background: Optional[Sequence[float]], fov_deg: float):
    """One frame prepared as scene frames are. fxfycxcy None: the fixed field of view. background
    None: alpha dropped (the reference); else RGB in [0, 1] to composite on.
    Returns image [3, h, w] in [0, 1] and fxfycxcy [4]."""
    with Image.open(path) as img:
        try:
            (w, h), resized, (left, top) = prepared_size(img.size, image_size, patch, square_crop)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        k = fxfycxcy if fxfycxcy is not None else fixed_fov_intrinsics(*img.size, fov_deg)
        k = prepare_intrinsics(k, img.size, image_size, patch, square_crop)
        img = img.convert("RGB" if background is None else "RGBA").resize(resized, resample=Image.LANCZOS)
        if (w, h) != resized:
            img = img.crop((left, top, left + w, top + h))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3 or 4, h, w]
    if background is not None:
        alpha = pixels[3:]  # [1, h, w]
        pixels = pixels[:3] * alpha + torch.tensor(background, dtype=torch.float32).view(3, 1, 1) * (1 - alpha)
    return pixels, k


def read_sources(path: str | Path) -> list[tuple[str, Path]]:
    """(object key, source) of the scene JSONs and render folders: a list file's lines, a folder's
    sub-folders (sorted), or the items of a JSON {uid: folder} (paths relative to that file). The key
    is the uid, else the folder's name or the JSON's stem."""
    path = Path(path)
    if path.is_dir():
        return [(p.name, p) for p in sorted(p for p in path.iterdir() if p.is_dir())]
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"object list not found: {path}")
        uids = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(uids, dict):
            raise ValueError(f"{path}: must map object ids to folders, got {type(uids).__name__}")
        return [(str(uid), resolve_path(folder, path)) for uid, folder in uids.items()]
    return [(p.name if p.is_dir() else p.stem, p) for p in read_scene_list(path)]


def entry_count(source: Path) -> int:
    """What the reference's evaluation filter counts: a folder's entries (os.listdir), or for a scene
    JSON twice its frames (a render folder of the same frames holds NNN.png and NNN.npy each)."""
    if source.is_dir():
        return len(os.listdir(source))
    return 2 * len(read_scene_json(source)["frames"])


def evaluation_sources(sources: list[tuple[str, Path]], limit: Optional[int]) -> tuple[list, list]:
    """(kept, excluded) of the first `limit` sources (None: all) by the reference's evaluation filter;
    excluded: (key, reason)."""
    kept, excluded = [], []
    for key, source in sources[:limit]:
        try:
            entries = entry_count(source)
        except (OSError, ValueError) as err:
            excluded.append((key, f"{source}: cannot be read ({err})"))
            continue
        if entries > EVAL_MIN_ENTRIES:
            kept.append((key, source))
        else:
            what = "entries" if source.is_dir() else "entries (2 per frame of the scene JSON)"
            excluded.append((key, f"{source}: {entries} {what}; evaluation takes objects of more than "
                                  f"{EVAL_MIN_ENTRIES}, as the reference's"))
    return kept, excluded


def read_frames(source: Path) -> tuple[str, list[tuple[Path, Optional[list], Optional[list]]]]:
    """(scene name, frames): each frame (image path, fxfycxcy or None, w2c or None). A render folder's
    frames are 000.png ... as many as it holds PNGs, their w2c read later from NNN.npy."""
    if source.is_dir():
        count = sum(1 for _ in source.glob("*.png"))  # the reference counts the PNGs
        return source.name, [(source / f"{i:03d}.png", None, None) for i in range(count)]
    scene = read_scene_json(source)
    return scene["scene_name"], [(resolve_path(f["image_path"], source), f["fxfycxcy"], f["w2c"])
                                 for f in scene["frames"]]


def read_npy_w2c(image_path: Path) -> np.ndarray:
    """The 3x4 (or 4x4) world-to-camera matrix saved beside a render as NNN.npy, as 4x4."""
    path = image_path.with_suffix(".npy")
    rt = np.load(path)
    if rt.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"{path}: expected a 3x4 or 4x4 camera matrix, got shape {rt.shape}")
    return np.concatenate([rt[:3], [[0.0, 0.0, 0.0, 1.0]]]) if rt.shape == (3, 4) else rt


class ObjectDataset(torch.utils.data.Dataset):
    def __init__(self, source: str | Path, *, image_size: int = 256, patch_size: int = 8, num_views: int = 8,
                 square_crop: bool = True, background: Optional[Sequence[float]] = None,
                 camera_convention: str = "opengl", fov_deg: float = 49.1, normalize_poses: bool = True,
                 scene_scale_factor: float = 1.35, view_sampler: str = "groups", scale: float = 1.0, seed: int = 0,
                 evaluation: bool = False, eval_objects: Optional[int] = EVAL_OBJECTS):
        if camera_convention not in CAMERA_CONVENTIONS:
            raise ValueError(f"camera_convention must be one of {CAMERA_CONVENTIONS}, got {camera_convention!r}")
        if view_sampler not in VIEW_SAMPLERS:
            raise ValueError(f"view_sampler must be one of {VIEW_SAMPLERS}, got {view_sampler!r}")
        if background is not None and len(background) != 3:
            raise ValueError(f"background must be 3 numbers (RGB in [0, 1]) or None, got {list(background)}")
        sources = read_sources(source)
        self.evaluation, self.excluded = evaluation, []
        self.counts = {"objects": len(sources)}
        if evaluation:
            if eval_objects is not None and eval_objects < 1:
                raise ValueError(f"eval_objects must be at least 1 or None (all), got {eval_objects}")
            considered = len(sources[:eval_objects])
            sources, self.excluded = evaluation_sources(sources, eval_objects)
            self.counts = {"listed": self.counts["objects"], "considered": considered, "evaluated": len(sources),
                           "excluded": len(self.excluded)}
        self.scene_keys = [key for key, _ in sources]
        self.scene_paths = [path for _, path in sources]
        self.image_size, self.patch, self.square_crop, self.num_views = image_size, patch_size, square_crop, num_views
        self.background = None if background is None else tuple(background)
        self.camera_convention, self.fov_deg, self.view_sampler = camera_convention, fov_deg, view_sampler
        self.normalize_poses, self.scene_scale_factor, self.scale = normalize_poses, scene_scale_factor, scale
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Training samples depend on (seed, epoch, index) only: reproducible and resumable."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scene_paths)

    def load(self, idx: int, frame_ids: Optional[list[int]] = None, rng: Optional[random.Random] = None) -> dict:
        """The views `frame_ids` of scene idx (drawn with `rng` if None); raises naming the file."""
        path = self.scene_paths[idx]
        name, frames = read_frames(path)
        if frame_ids is None:
            rng = rng if rng is not None else random.Random(hash((self.seed, self.epoch, idx)))
            draw = evaluation_views if self.evaluation else select_views
            try:
                frame_ids = draw(len(frames), self.num_views, rng, self.view_sampler)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        bad = [i for i in frame_ids if not 0 <= i < len(frames)]
        if bad:
            raise ValueError(f"{path}: frame indices {bad} out of range (scene has {len(frames)} frames)")
        images, intrinsics = zip(*(load_render(frames[i][0], frames[i][1], self.image_size, self.patch,
                                               self.square_crop, self.background, self.fov_deg) for i in frame_ids))
        w2c = torch.tensor(np.stack([frames[i][2] if frames[i][2] is not None else read_npy_w2c(frames[i][0])
                                     for i in frame_ids]), dtype=torch.float64)  # [v, 4, 4]
        check_poses(w2c, name=f"{path}: w2c of frames {frame_ids}")
        c2w = invert_pose(w2c)
        if self.camera_convention == "opengl":
            c2w = opengl_to_opencv(c2w)
        if self.normalize_poses:
            c2w = normalize_scene_poses(c2w, self.scene_scale_factor)
        c2w[:, :3, 3] *= self.scale
        return {"image": torch.stack(images), "c2w": c2w.float(), "fxfycxcy": torch.stack(intrinsics),
                "index": torch.tensor([[i, idx] for i in frame_ids]), "scene_name": name}

    def scene_key(self, idx: int) -> str:
        """The object's key in outputs: its uid, folder name or scene JSON stem."""
        return self.scene_keys[idx]

    def __getitem__(self, idx: int) -> dict:
        """Training sample; a bad scene is skipped with a warning and recorded in `skipped`. In evaluation,
        the object's views (from seed and idx alone); a bad one raises, naming the file."""
        if self.evaluation:
            return {**self.load(idx, rng=random.Random(self.seed * 1_000_003 + idx)), "skipped": []}
        rng = random.Random(hash((self.seed, self.epoch, idx)))
        return load_with_retries(lambda i: self.load(i, rng=rng), idx, self.scene_paths, rng)
