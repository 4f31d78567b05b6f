"""Datasets built from configs, view counts drawn per step, and bad scenes skipped in both loaders."""

import json
import warnings

import pytest
import torch

from configs.schema import config_from_dict
from data import synthetic
from data.dataset_scene import collate, split_views
from data.factory import build_dataset, check_view_counts, input_views_for_step
from utils.config import ConfigError
from utils.geometry import project_points


def _cfg(list_file, **training):
    return config_from_dict({
        "model": {"image_tokenizer": {"image_size": 32, "patch_size": 8},
                  "target_pose_tokenizer": {"image_size": 32, "patch_size": 8}},
        "training": {"dataset_path": str(list_file), "num_views": 4, "num_input_views": 2, "num_target_views": 2,
                     "view_selector": {"min_frame_dist": 3, "max_frame_dist": 7}, **training}})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out / "rooms", "rooms", 2, 2, frames=8, size=32, seed=0)
    synthetic.generate(out / "objects", "objects", 2, 0, frames=8, size=32, seed=0)
    return out


def test_scene_dataset_from_config(generated):
    ds = build_dataset(_cfg(generated / "rooms" / "train" / "full_list.txt"))
    sample = ds[0]
    assert sample["image"].shape == (4, 3, 32, 32) and sample["skipped"] == []
    test = generated / "rooms" / "test"
    ev = build_dataset(_cfg(test / "full_list.txt"), test / "full_list.txt", eval_index=test / "evaluation_index.json")
    assert ev.counts["evaluated"] == 2
    entry = json.loads((test / "evaluation_index.json").read_text())[ev[0]["scene_name"]]
    assert ev[0]["index"][:, 0].tolist() == entry["context"] + entry["target"][:2]
    # The reference's inference.py sets num_views = inputs + targets: 6 + 3 evaluate under num_views 4.
    ev = build_dataset(_cfg(test / "full_list.txt", num_input_views=6, num_target_views=3), test / "full_list.txt",
                       eval_index=test / "evaluation_index.json")
    assert ev[0]["image"].shape[0] == 9
    with pytest.raises(ConfigError, match="num_views=4"):
        build_dataset(_cfg(test / "full_list.txt", num_input_views=6, num_target_views=3))  # training still checks


def test_object_dataset_from_config(generated):
    cfg = _cfg(generated / "objects" / "train" / "full_list.txt", dataset_name="object",
               objects={"background": [0.0, 0.0, 0.0]})
    sample = build_dataset(cfg)[1]
    assert sample["image"].shape == (4, 3, 32, 32)
    assert sample["image"][:, :, 0, 0].abs().max() == 0  # corners miss the object: background black
    # Blender cameras converted (and normalized): the point all optical axes meet (the object's
    # centre, least squares) projects to the principal point of every view.
    c2w = sample["c2w"].double()
    eye = torch.eye(3, dtype=torch.float64)
    off_axis = eye - c2w[:, :3, 2, None] * c2w[:, None, :3, 2]  # [v, 3, 3] projectors off each axis
    centre = torch.linalg.solve(off_axis.sum(0), (off_axis @ c2w[:, :3, 3, None]).sum(0))  # [3, 1]
    uv, depth = project_points(centre.T, c2w, sample["fxfycxcy"].double())
    assert (depth > 0).all() and torch.allclose(uv[:, 0], sample["fxfycxcy"][:, 2:].double(), atol=1e-3)
    with pytest.raises(ConfigError, match="cache_frames applies to scene datasets"):
        build_dataset(_cfg(generated / "objects" / "train" / "full_list.txt", dataset_name="object", cache_frames=True))


def test_bad_config_and_paths_are_named(generated, tmp_path):
    with pytest.raises(ConfigError, match="dataset_name.*'scene'"):
        build_dataset(_cfg(generated / "rooms" / "train" / "full_list.txt", dataset_name="nope"))
    with pytest.raises(FileNotFoundError, match="training.dataset_path.*missing.txt"):
        build_dataset(_cfg(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="num_views=4 is fewer than num_input_views=3 \\+ num_target_views=2"):
        check_view_counts(_cfg("x", num_input_views=3, target_has_input=False).training)
    with pytest.raises(ConfigError, match="view_max=5"):
        check_view_counts(_cfg("x", use_view_masking=True, view_min=2, view_max=5).training)
    with pytest.raises(ConfigError, match="view_mask_strategy"):
        check_view_counts(_cfg("x", use_view_masking=True, view_mask_strategy="per_sample").training)
    with pytest.raises(ConfigError, match="1 <= view_min <= view_max"):
        check_view_counts(_cfg("x", use_view_masking=True, view_min=3, view_max=2).training)


def test_input_view_count_per_step(generated):
    fixed = _cfg("x").training
    assert {input_views_for_step(fixed, s) for s in range(20)} == {2}
    varied = _cfg("x", num_views=6, use_view_masking=True, view_min=1, view_max=4).training
    counts = [input_views_for_step(varied, s) for s in range(200)]
    assert set(counts) == {1, 2, 3, 4}
    assert counts == [input_views_for_step(varied, s) for s in range(200)]  # the same on every rank and resume
    # a batch sampled for view_max inputs splits into any drawn count
    ds = build_dataset(_cfg(generated / "rooms" / "train" / "full_list.txt", num_views=6, use_view_masking=True, view_min=1, view_max=4))
    assert ds.num_input_views == 4


def test_split_views_for_a_drawn_count(generated):
    cfg = _cfg(generated / "rooms" / "train" / "full_list.txt", num_views=6, use_view_masking=True,
               view_min=1, view_max=4)
    batch = collate([build_dataset(cfg)[i] for i in range(2)])
    for n in (1, 4):
        inputs, targets = split_views(batch, n, 2, target_has_input=True, generator=torch.Generator().manual_seed(0))
        assert inputs["image"].shape[1] == n and targets["image"].shape[1] == 2


def _break_scene(list_file, pose=None, image=False):
    """Corrupt the first scene of a list: a non-rigid pose in every frame, or every image."""
    meta = list_file.parent / list_file.read_text().split()[0]
    scene = json.loads(meta.read_text())
    for frame in scene["frames"]:
        if pose is not None:
            frame["w2c"] = pose
        if image:
            (meta.parent / frame["image_path"]).write_bytes(b"not an image")
    meta.write_text(json.dumps(scene))
    return scene["scene_name"]


@pytest.mark.parametrize("fault", ["non-rigid pose", "non-finite pose", "corrupt image"])
@pytest.mark.parametrize("kind", ["rooms", "objects"])
def test_bad_scenes_are_skipped_and_counted(tmp_path, kind, fault):
    synthetic.generate(tmp_path, kind, 3, 0, frames=8, size=16, seed=1)
    list_file = tmp_path / "train" / "full_list.txt"
    pose = {"non-rigid pose": [[2.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
            "non-finite pose": [[float("nan")] * 4] * 4, "corrupt image": None}[fault]
    name = _break_scene(list_file, pose=pose, image=fault == "corrupt image")
    cfg = _cfg(list_file, dataset_name="scene" if kind == "rooms" else "object")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample = build_dataset(cfg)[0]
    assert sample["scene_name"] != name and {s for s, _ in sample["skipped"]} == {name}  # may be redrawn
    assert any(name in str(w.message) for w in caught)
