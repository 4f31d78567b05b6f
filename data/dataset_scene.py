"""Scene-level dataset (RealEstate10K and the synthetic rooms) in the reference's JSON format.

Training: pick a frame span between `view_selector.min_frame_dist` and `max_frame_dist`, take its
two ends and random frames between them (the reference's sampler). Evaluation: frames from a
pixelSplat evaluation index (`{scene: {"context": [i, j], "target": [...]} or null}`); more input
views than the index gives are spread evenly between the two context frames, as the reference does.
Frames are resized to the configured height (width to a patch multiple), optionally centre-cropped
to a square, intrinsics updated to match (`prepared_size`: the reference's arithmetic, to the
pixel, for any frame size), and poses normalized per sample.

A sample is a dict: image [v, 3, h, w] in [0, 1], c2w [v, 4, 4] (OpenCV), fxfycxcy [v, 4] (pixels),
index [v, 2] (frame, scene), scene_name, and `skipped`: the (scene, reason) pairs passed over to
produce it, so the trainer can count and log them (a DataLoader worker's counters never reach it).
"""

import json
import random
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from data.scene_format import load_with_retries, read_scene_json, read_scene_list, resolve_path
from utils.config import ConfigError
from utils.geometry import check_poses, crop_intrinsics, invert_pose, normalize_scene_poses, resize_intrinsics


def prepared_size(size: tuple[int, int], image_size: int, patch: int, square_crop: bool):
    """How a frame of size (w0, h0) is prepared, exactly as the reference's preprocess_frames
    (Efficient-LVSM and LVSM data/dataset_scene.py): height image_size; width image_size / h0 * w0
    truncated to an int, then rounded to a multiple of `patch` with Python's round (half to even);
    with square_crop, a centre crop to min(w, h) at offsets ((w - side) // 2, (h - side) // 2).
    Returns ((w, h) at the end, (w, h) after the resize, (left, top) of the crop)."""
    w0, h0 = size
    h = image_size
    w = int(round(int(image_size / h0 * w0) / patch) * patch)  # the reference's two steps, its float order
    if w < 1:
        raise ValueError(f"a {w0}x{h0} frame resized to height {image_size} is {image_size / h0 * w0:.2f} pixels "
                         f"wide, which rounds to width 0 at patch size {patch}")
    if square_crop:
        side = min(w, h)
        return (side, side), (w, h), ((w - side) // 2, (h - side) // 2)
    return (w, h), (w, h), (0, 0)


def prepare_intrinsics(fxfycxcy, size: tuple[int, int], image_size: int, patch: int, square_crop: bool):
    """fxfycxcy [4] of a frame of `size` (w0, h0) -> those of the prepared frame [4] (float32): scaled
    by w / w0 and h / h0, then shifted by the crop, in float64 as the reference does."""
    _, (w, h), (left, top) = prepared_size(size, image_size, patch, square_crop)
    k = resize_intrinsics(torch.as_tensor(fxfycxcy, dtype=torch.float64), w / size[0], h / size[1])
    return crop_intrinsics(k, left, top).float()


def load_view(path: Path, fxfycxcy, image_size: int, patch: int, square_crop: bool):
    """One frame prepared as `prepared_size` says (PIL LANCZOS resize, then the crop).
    Returns image [3, h, w] in [0, 1] and its fxfycxcy [4]."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        try:
            (w, h), resized, (left, top) = prepared_size(img.size, image_size, patch, square_crop)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        k = prepare_intrinsics(fxfycxcy, img.size, image_size, patch, square_crop)
        img = img.resize(resized, resample=Image.LANCZOS)
        if (w, h) != resized:
            img = img.crop((left, top, left + w, top + h))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, h, w]
    return pixels, k


def index_entry_problem(entry) -> Optional[str]:
    """Why an evaluation index entry (not null) cannot be used, or None: it must be an object with a
    non-empty integer list `context` and a non-empty integer list `target`."""
    if not isinstance(entry, dict):
        return f"entry must be an object {{context, target}} or null, got a {type(entry).__name__}: {entry!r:.80}"
    for field in ("context", "target"):
        value = entry.get(field)
        if value is None:
            return f"entry has no {field!r}"
        if not isinstance(value, list) or not value:
            return f"{field!r} must be a non-empty list of frame indices, got {value!r:.80}"
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            return f"{field!r} must hold integer frame indices, got {value!r:.80}"
    return None


def spread_context(context: list[int], num_input_views: int) -> list[int]:
    """Input frames for an evaluation entry: the two context frames, plus evenly spread frames
    between them when more input views are asked for (reference: rint(linspace(first, last, n)))."""
    first, last = context[0], context[-1]
    if num_input_views == 1:
        return [first]
    if num_input_views <= len(context):
        return list(context[:num_input_views - 1]) + [last]
    views = np.rint(np.linspace(first, last, num_input_views)).astype(int).tolist()
    views[0], views[-1] = first, last
    return views


class SceneDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        list_file: str | Path,
        *,
        image_size: int = 256,
        patch_size: int = 8,
        num_views: int = 8,
        num_input_views: int = 2,
        num_target_views: int = 6,
        square_crop: bool = True,
        scene_scale_factor: float = 1.35,
        min_frame_dist: int = 25,
        max_frame_dist: int = 192,
        eval_index: Optional[str | Path] = None,
        seed: int = 0,
        cache_frames: bool = False,
    ):
        self.scene_paths = read_scene_list(list_file)
        self.image_size, self.patch, self.square_crop = image_size, patch_size, square_crop
        self.num_views, self.num_input_views, self.num_target_views = num_views, num_input_views, num_target_views
        self.scene_scale_factor = scene_scale_factor
        self.min_frame_dist, self.max_frame_dist = min_frame_dist, max_frame_dist
        self.seed, self.epoch = seed, 0
        # cache_frames: each frame decoded once and kept (uint8, in this process), each scene JSON parsed once
        self.frame_cache: Optional[dict] = {} if cache_frames else None
        self.scene_cache: Optional[dict] = {} if cache_frames else None
        self.index: Optional[dict] = None
        self.index_problems: list[tuple[str, str]] = []  # (scene key, reason): left out of the evaluation
        self.counts = {"scenes": len(self.scene_paths)}
        if eval_index is not None:
            self._apply_index(Path(eval_index))

    def _apply_index(self, path: Path) -> None:
        """Keep the scenes the index names with views, keyed by their metadata file's stem (unique by
        construction); count those it skips and those missing. A scene the list names twice (same stem)
        or whose index entry is malformed is left out and named in `index_problems` as (key, reason)."""
        if not path.is_file():
            raise FileNotFoundError(f"evaluation index not found: {path}")
        twice: list[str] = []

        def no_repeats(pairs):  # json keeps the last of a repeated key without a word: note it
            keys = [k for k, _ in pairs]
            twice.extend(k for k in dict.fromkeys(keys) if keys.count(k) > 1)
            return dict(pairs)
        try:
            with open(path, encoding="utf-8") as f:
                index = json.load(f, object_pairs_hook=no_repeats)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"evaluation index {path}: not JSON ({err})") from None
        if not isinstance(index, dict):
            raise ConfigError(f"evaluation index {path}: must be a JSON object {{scene: {{context, target}} or "
                              f"null}}, got a {type(index).__name__}")
        by_stem: dict[str, list[Path]] = {}
        for p in self.scene_paths:
            by_stem.setdefault(p.stem, []).append(p)
        problems = [(k, "scene list names " + " and ".join(str(p) for p in ps) + ": same scene key, not merged")
                    for k, ps in sorted(by_stem.items()) if len(ps) > 1]
        on_disk = {k: ps[0] for k, ps in by_stem.items() if len(ps) == 1}
        named = {k for k, v in index.items() if v is not None}
        for key in sorted(named & set(on_disk)):
            reason = index_entry_problem(index[key])
            if twice and key in twice:
                reason = "the index lists this scene more than once (which entry holds is ambiguous)"
            if reason:
                problems.append((key, f"{path}: {reason}"))
        bad = {k for k, _ in problems}
        scored = [index[k] for k in (named & set(on_disk)) - bad]
        extra = sum(len(e["target"]) > self.num_target_views for e in scored)
        overlap = sum(bool(set(e["target"][:self.num_target_views]) & set(spread_context(e["context"], self.num_input_views)))
                      for e in scored)
        if extra:
            warnings.warn(f"evaluation index {path}: {extra} scene(s) list more targets than num_target_views="
                          f"{self.num_target_views}; the first {self.num_target_views} of each are scored")
        if overlap:
            warnings.warn(f"evaluation index {path}: in {overlap} scene(s) a target frame is also an input frame "
                          f"(with num_input_views={self.num_input_views}); those targets are not novel views")
        self.index = index
        self.index_problems = problems
        self.scene_paths = [on_disk[k] for k in sorted((named & set(on_disk)) - bad)]
        self.counts = {
            "evaluated": len(self.scene_paths),
            "skipped_by_index": sum(v is None for v in index.values()),
            "missing_on_disk": len(named - set(by_stem)),
            "missing_on_disk_names": sorted(named - set(by_stem)),
            "not_in_index": len(set(by_stem) - set(index)),
            "duplicate_scene_key": sum(len(ps) > 1 for ps in by_stem.values()),
            "malformed_in_index": len(problems) - sum(len(ps) > 1 for ps in by_stem.values()),
            "listed_twice_in_index": len(twice),
            "more_targets_than_scored": extra,
            "targets_among_inputs": overlap,
        }

    def set_epoch(self, epoch: int) -> None:
        """Training samples depend on (seed, epoch, index) only: reproducible and resumable."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scene_paths)

    def scene_key(self, idx: int) -> str:
        """The scene's key in outputs and in the evaluation index: its metadata file's stem."""
        return self.scene_paths[idx].stem

    def select_frames(self, num_frames: int, rng: random.Random) -> Optional[list[int]]:
        """The reference's training sampler; None if the scene is too short for it."""
        if num_frames < self.num_views:
            return None
        lo = max(self.min_frame_dist, self.num_views)
        hi = min(num_frames - 1, self.max_frame_dist)
        if hi <= lo:  # the reference's test: a span of exactly min_frame_dist is never drawn alone
            return None
        span = rng.randint(lo, hi)
        start = rng.randint(0, num_frames - span - 1)
        middle = rng.sample(range(start + 1, start + span), self.num_views - 2)
        return [start, start + span] + middle

    def load(self, scene_path: Path, scene: dict, frame_ids: list[int], scene_idx: int) -> dict:
        """Load chosen frames of a scene (its parsed JSON); raises ValueError/OSError naming the file."""
        frames = scene["frames"]
        bad = [i for i in frame_ids if not 0 <= i < len(frames)]
        if bad:
            raise ValueError(f"{scene_path}: frame indices {bad} out of range (scene has {len(frames)} frames)")
        images, intrinsics = [], []
        for i in frame_ids:
            path = resolve_path(frames[i]["image_path"], scene_path)
            img, k = self.load_view(path, frames[i]["fxfycxcy"])
            images.append(img)
            intrinsics.append(k)
        sizes = {tuple(img.shape[-2:]) for img in images}
        if len(sizes) > 1:  # one size per sample: say which scene, not torch.stack's "equal size"
            by_frame = {i: tuple(img.shape[-2:]) for i, img in zip(frame_ids, images)}
            raise ValueError(f"{scene_path}: its frames prepare to different sizes (frame: h x w) {by_frame}; "
                             "a scene's frames must share one aspect ratio")
        w2c = torch.tensor([frames[i]["w2c"] for i in frame_ids], dtype=torch.float64)  # [v, 4, 4]
        check_poses(w2c, name=f"{scene_path}: w2c of frames {frame_ids}")  # finite and rigid
        c2w = normalize_scene_poses(invert_pose(w2c), self.scene_scale_factor).float()  # [v, 4, 4]
        return {
            "image": torch.stack(images),  # [v, 3, h, w]
            "c2w": c2w,
            "fxfycxcy": torch.stack(intrinsics),  # [v, 4]
            "index": torch.tensor([[i, scene_idx] for i in frame_ids]),  # [v, 2]
            "scene_name": scene["scene_name"],
        }

    def load_view(self, path: Path, fxfycxcy) -> tuple[torch.Tensor, torch.Tensor]:
        """`load_view` at this dataset's size, through the frame cache when there is one (the same values:
        the cache keeps the decoded bytes, and x / 255 in float32 is what load_view computes)."""
        if self.frame_cache is None:
            return load_view(path, fxfycxcy, self.image_size, self.patch, self.square_crop)
        key = (str(path), tuple(fxfycxcy))
        if key not in self.frame_cache:
            img, k = load_view(path, fxfycxcy, self.image_size, self.patch, self.square_crop)
            self.frame_cache[key] = ((img * 255.0).round().to(torch.uint8), k)
        pixels, k = self.frame_cache[key]
        return pixels.float() / 255.0, k.clone()

    def read_scene(self, path: Path) -> dict:
        if self.scene_cache is None:
            return read_scene_json(path)
        if path not in self.scene_cache:
            self.scene_cache[path] = read_scene_json(path)
        return self.scene_cache[path]

    def __getitem__(self, idx: int) -> dict:
        if self.index is not None:  # evaluation: fixed views, errors name the scene
            path = self.scene_paths[idx]
            entry = self.index[path.stem]
            ids = spread_context(entry["context"], self.num_input_views) + entry["target"][:self.num_target_views]
            return {**self.load(path, self.read_scene(path), ids, idx), "skipped": []}
        rng = random.Random(hash((self.seed, self.epoch, idx)))

        def load(i: int) -> dict:
            path = self.scene_paths[i]
            scene = self.read_scene(path)
            frame_ids = self.select_frames(len(scene["frames"]), rng)
            if frame_ids is None:
                raise ValueError(f"{path}: {len(scene['frames'])} frames cannot give {self.num_views} views "
                                 f"spanning min_frame_dist {self.min_frame_dist} to max_frame_dist "
                                 f"{self.max_frame_dist} frames")
            return self.load(path, scene, frame_ids, i)

        return load_with_retries(load, idx, self.scene_paths, rng)


def collate(samples: list[dict]) -> dict:
    """Stack tensors; keep scene names and the skipped lists as lists."""
    out = {k: torch.stack([s[k] for s in samples]) for k in ("image", "c2w", "fxfycxcy", "index")}
    out["scene_name"] = [s["scene_name"] for s in samples]
    out["skipped"] = [pair for s in samples for pair in s["skipped"]]
    return out


def split_views(batch: dict, num_input_views: int, num_target_views: int, target_has_input: bool,
                generator: Optional[torch.Generator] = None, target_ids: Optional[torch.Tensor] = None
                ) -> tuple[dict, dict]:
    """Inputs: the first `num_input_views` views. Targets: the last `num_target_views` views, or
    (target_has_input) views drawn at random among all of them, per sample (reference); or the views
    `target_ids` [b, v_t] names (a recorded draw)."""
    b, v = batch["c2w"].shape[:2]
    if num_input_views + (0 if target_has_input else num_target_views) > v:
        raise ValueError(f"{num_input_views} input + {num_target_views} target views need more than the "
                         f"{v} views per sample")
    if target_ids is not None:
        if tuple(target_ids.shape) != (b, num_target_views) or not 0 <= int(target_ids.min()) <= int(target_ids.max()) < v:
            raise ValueError(f"target_ids of shape {list(target_ids.shape)} (values {target_ids.min()}..."
                             f"{target_ids.max()}) do not name {num_target_views} of the {v} views of {b} samples")
    elif target_has_input:
        target_ids = torch.stack([torch.randperm(v, generator=generator)[:num_target_views] for _ in range(b)])
    else:
        target_ids = torch.arange(v - num_target_views, v).expand(b, -1)
    rows = torch.arange(b)[:, None]
    keys = ("image", "c2w", "fxfycxcy", "index")
    inputs = {k: batch[k][:, :num_input_views] for k in keys}
    targets = {k: batch[k][rows, target_ids] for k in keys}
    return inputs, targets
