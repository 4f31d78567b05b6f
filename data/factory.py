"""Datasets from a config, and the training view counts (fixed or drawn per step).

    dataset = build_dataset(cfg)                          # training.dataset_path, training sampler
    dataset = build_dataset(cfg, "data/test/full_list.txt", eval_index="data/test/index.json")
    dataset = build_dataset(cfg, evaluation=True)  # objects: the reference's evaluation mode
    n_in = input_views_for_step(cfg.training, step)
"""

import random
from pathlib import Path
from typing import Optional

from data.dataset_object import CAMERA_CONVENTIONS, VIEW_SAMPLERS, ObjectDataset
from data.dataset_scene import SceneDataset
from utils.config import ConfigError

# training.dataset_name -> kind; the reference's class paths are accepted as written in its configs.
DATASETS = {"scene": "scene", "data.dataset_scene.Dataset": "scene", "object": "object",
            "data.dataset_object.Dataset": "object", "data.dataset_object.ObjaverseDataset": "object"}
VIEW_MASK_STRATEGIES = ("unified",)


def check_view_counts(training, num_views: Optional[int] = None, evaluation: bool = False) -> None:
    """Raise ConfigError naming the keys if the view counts cannot be sampled (`num_views`: the frames
    per sample, training.num_views unless the model family derives it). `evaluation`: num_input_views
    inputs, use_view_masking aside (it draws training's counts)."""
    t = training
    num_views = t.num_views if num_views is None else num_views
    most_inputs = t.num_input_views
    if t.use_view_masking and not evaluation:
        if t.view_mask_strategy not in VIEW_MASK_STRATEGIES:
            raise ConfigError(f"training.view_mask_strategy: {t.view_mask_strategy!r} is not supported; "
                              f"use one of {list(VIEW_MASK_STRATEGIES)} (one input-view count per batch)")
        if not 1 <= t.view_min <= t.view_max:
            raise ConfigError(f"training.view_min={t.view_min} and view_max={t.view_max} must satisfy "
                              "1 <= view_min <= view_max")
        most_inputs = t.view_max
    if most_inputs < 1 or t.num_target_views < 1:
        raise ConfigError(f"training.num_input_views={t.num_input_views} and num_target_views="
                          f"{t.num_target_views} must be at least 1")
    vs = t.view_selector
    if vs.min_frame_dist > vs.max_frame_dist:
        raise ConfigError(f"training.view_selector.min_frame_dist={vs.min_frame_dist} is above "
                          f"max_frame_dist={vs.max_frame_dist}")
    needed = most_inputs + (0 if t.target_has_input else t.num_target_views)
    if needed > num_views:
        which = "view_max" if t.use_view_masking else "num_input_views"
        extra = "" if t.target_has_input else f" + num_target_views={t.num_target_views}"
        raise ConfigError(f"training.num_views={num_views} is fewer than {which}={most_inputs}{extra} "
                          f"(target_has_input={t.target_has_input})")


def input_views_for_step(training, step: int) -> int:
    """Input views for a training step: num_input_views, or with use_view_masking a count drawn
    uniformly in [view_min, view_max] from (seed, step) alone, so every rank and a resumed run draw
    the same one."""
    if not training.use_view_masking:
        return training.num_input_views
    return random.Random(training.seed * 1_000_003 + step).randint(training.view_min, training.view_max)


def dataset_kind(training) -> str:
    """"scene" or "object": what training.dataset_name names (the reference's class paths included)."""
    kind = DATASETS.get(training.dataset_name)
    if kind is None:
        raise ConfigError(f"training.dataset_name: unknown dataset {training.dataset_name!r}; choose one of "
                          f"{list(DATASETS)}")
    return kind


def build_dataset(cfg, list_file: Optional[str | Path] = None, eval_index: Optional[str | Path] = None,
                  seed: Optional[int] = None, num_views: Optional[int] = None, evaluation: bool = False):
    """The dataset training.dataset_name names, reading list_file (training.dataset_path by default).
    With eval_index (scenes only), the fixed evaluation views of that pixelSplat index; with
    `evaluation` and objects, the reference's evaluation mode (data.dataset_object: the first
    inference.eval_objects objects). `num_views`: frames per training sample (training.num_views by
    default; the trainer passes its family's; in evaluation, num_input_views + num_target_views, as the
    reference's inference.py overwrites it)."""
    t, tok = cfg.training, cfg.model.image_tokenizer
    kind = dataset_kind(t)
    evaluation = evaluation or eval_index is not None
    if evaluation:  # num_input_views fixed inputs, whatever training draws; and
        num_views = t.num_input_views + t.num_target_views  # num_views as the reference's inference.py sets it
        check_view_counts(t, num_views, evaluation=True)
    else:
        num_views = t.num_views if num_views is None else num_views
        check_view_counts(t, num_views)
    if kind == "object":
        if t.cache_frames:
            raise ConfigError("training.cache_frames applies to scene datasets only, not to objects")
        if eval_index is not None:
            raise ConfigError("an evaluation index applies to scene datasets only, not to objects")
        return _object_dataset(cfg, list_file, num_views, t.seed if seed is None else seed, evaluation)
    if evaluation and eval_index is None:
        raise ConfigError("inference.view_idx_file_path: scenes are evaluated at an index (pixelSplat's JSON)")
    list_file = Path(list_file if list_file is not None else t.dataset_path)
    if not list_file.is_file():
        key = "training.dataset_path" if list_file == Path(t.dataset_path) else "the scene list"
        raise FileNotFoundError(f"{key}: scene list not found: {list_file} (generate the synthetic data with "
                                "`python -m data.synthetic --out DIR`, or convert a dataset with `python -m data.process_data`)")
    seed = t.seed if seed is None else seed
    most_inputs = t.view_max if t.use_view_masking and eval_index is None else t.num_input_views  # index: fixed
    return SceneDataset(list_file, image_size=tok.image_size, patch_size=tok.patch_size, num_views=num_views,
                        num_input_views=most_inputs, num_target_views=t.num_target_views, square_crop=t.square_crop,
                        scene_scale_factor=t.scene_scale_factor, min_frame_dist=t.view_selector.min_frame_dist,
                        max_frame_dist=t.view_selector.max_frame_dist, eval_index=eval_index, seed=seed,
                        cache_frames=t.cache_frames and eval_index is None)


def _object_dataset(cfg, source: Optional[str | Path], num_views: int, seed: int, evaluation: bool) -> ObjectDataset:
    """Objects from `source`, else training.list_path (a JSON {uid: folder}, as the reference), else
    training.dataset_path (a list file, or a folder of render folders); with `evaluation`, the first
    inference.eval_objects of them, as the reference's evaluation mode."""
    t, tok, o = cfg.training, cfg.model.image_tokenizer, cfg.training.objects
    key = "the object list" if source is not None else "training.list_path" if t.list_path else "training.dataset_path"
    source = Path(source if source is not None else t.list_path or t.dataset_path)
    if not source.exists():
        raise FileNotFoundError(f"{key}: not found: {source} (a list of scene JSONs or render folders, a folder "
                                "of render folders, or a JSON {uid: folder}; synthetic objects: "
                                "`python -m data.synthetic --out DIR --kind objects`)")
    for name, value, allowed in (("camera_convention", o.camera_convention, CAMERA_CONVENTIONS),
                                 ("view_sampler", o.view_sampler, VIEW_SAMPLERS)):
        if value not in allowed:
            raise ConfigError(f"training.objects.{name}: {value!r} is not one of {list(allowed)}")
    if o.background is not None and len(o.background) != 3:
        raise ConfigError(f"training.objects.background: {list(o.background)} must be 3 numbers (RGB) or null")
    background = None if o.background is None else list(o.background)
    return ObjectDataset(source, image_size=tok.image_size, patch_size=tok.patch_size, num_views=num_views,
                         square_crop=t.square_crop, background=background, camera_convention=o.camera_convention,
                         fov_deg=o.fov_deg, normalize_poses=o.normalize_poses, scene_scale_factor=t.scene_scale_factor,
                         view_sampler=o.view_sampler, scale=o.scale, seed=seed, evaluation=evaluation,
                         eval_objects=cfg.inference.eval_objects)
