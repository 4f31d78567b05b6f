"""The object loader against the authors' one (Efficient-LVSM data/dataset_object.py at 8980294^,
renders from its objaverse-xl Blender scripts at a88aed0), re-derived here from the reference text."""

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from configs.schema import config_from_dict
from data.dataset_object import ObjectDataset, fixed_fov_intrinsics, select_views
from data.factory import build_dataset
from utils.config import ConfigError
from utils.geometry import invert_pose, opencv_to_opengl, project_points


# ----------------------------------------------------------------------------- the reference, re-derived
def _reference_views(n: int, num_views: int, rng: random.Random) -> list[int]:
    """ObjaverseDataset.__getitem__'s training view choice (its `random` module swapped for rng)."""
    if n == num_views:
        return list(range(n))  # the reference writes range(32): the same for its num_views=32
    views = []
    for g in range(4):
        group = list(range(g * 8, min((g + 1) * 8, n)))
        if group:
            views.append(rng.choice(group))
    remaining = num_views - len(views)
    if remaining > 0:
        available = [i for i in range(n) if i not in views]
        views += rng.sample(available, remaining) if len(available) >= remaining else available
    return views


def _reference_normalize(c2w: torch.Tensor, factor: float = 1.35) -> torch.Tensor:
    """ObjaverseDataset.preprocess_poses (the same text as its scene loader's), in float64."""
    center = c2w[:, :3, 3].mean(0)
    forward = F.normalize(c2w[:, :3, 2].mean(0), dim=-1)
    down = c2w[:, :3, 1].mean(0)
    right = F.normalize(torch.cross(down, forward, dim=-1), dim=-1)
    down = F.normalize(torch.cross(forward, right, dim=-1), dim=-1)
    avg = torch.eye(4, dtype=c2w.dtype)
    avg[:3, :3] = torch.stack([right, down, forward], dim=-1)
    avg[:3, 3] = center
    out = torch.linalg.inv(avg) @ c2w
    out[:, :3, 3] /= factor * out[:, :3, 3].abs().max()
    return out


def _blender_rt(location: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Blender camera at `location` looking at the origin, world up +z (to_track_quat("-Z", "Y")):
    its 3x4 matrix as get_3x4_RT_matrix_from_blender saves it, and its OpenCV c2w."""
    back = location / np.linalg.norm(location)  # Blender camera +z points away from the target
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    rot = np.stack([right, up, back], axis=1)  # camera-to-world rotation, Blender axes
    rt = np.concatenate([rot.T, (-rot.T @ location)[:, None]], axis=1)  # R_world2bcam, T_world2bcam
    c2w_cv = np.eye(4)
    c2w_cv[:3, :3], c2w_cv[:3, 3] = rot @ np.diag([1.0, -1.0, -1.0]), location
    return rt, c2w_cv


def _render_folder(folder, n: int, size: int = 32, rgba=None):
    """A render folder as the authors' scripts write it: an orbit (here 20 degrees up), NNN.png + NNN.npy.
    Returns the OpenCV c2w [n, 4, 4] of its cameras."""
    folder.mkdir(parents=True)
    c2ws = []
    for i in range(n):
        azimuth, radius = 2 * math.pi * i / n, 1.5 + 1.3 * ((i * 7) % n) / n
        elevation = 0.35
        loc = radius * np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                                 math.sin(elevation)])
        rt, c2w = _blender_rt(loc)
        np.save(folder / f"{i:03d}.npy", rt)
        image = rgba if rgba is not None else np.full((size, size, 4), [i, 100, 200, 255], np.uint8)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        c2ws.append(c2w)
    return torch.tensor(np.stack(c2ws))


# ----------------------------------------------------------------------------- views
@pytest.mark.parametrize("n", [32, 40, 33, 20, 12, 8, 9])
def test_views_are_the_reference_groups(n):
    for seed in range(50):
        num_views = 8
        ours = select_views(n, num_views, random.Random(seed))
        assert ours == _reference_views(n, num_views, random.Random(seed))
        assert len(ours) == num_views == len(set(ours))
    if n >= 32:  # one view from each quarter of the orbit, every frame of a group drawn sometimes
        firsts = [select_views(n, 8, random.Random(s))[:4] for s in range(400)]
        for g in range(4):
            assert {f[g] for f in firsts} == set(range(8 * g, 8 * g + 8))


def test_views_edge_counts():
    assert select_views(32, 32, random.Random(0)) == list(range(32))  # the reference's range(32)
    assert select_views(6, 6, random.Random(0)) == list(range(6))
    two = select_views(32, 2, random.Random(3))  # the reference would return all 4 group picks
    assert two == _reference_views(32, 2, random.Random(3))[:2]
    with pytest.raises(ValueError, match="5 frames, fewer than num_views=8"):
        select_views(5, 8, random.Random(0))
    assert sorted(select_views(10, 10, random.Random(0), "random")) == list(range(10))


# ----------------------------------------------------------------------------- intrinsics
def test_fixed_fov_intrinsics_closed_form(tmp_path):
    half = math.tan(math.radians(49.1) / 2)
    assert fixed_fov_intrinsics(96, 64, 49.1) == pytest.approx([32 / half, 32 / half, 48, 32])
    # 512 x 512 renders (the reference's size): fx = fy = 256 / tan(fov / 2), cx = cy = 256, then
    # scaled by the resize to image_size.
    _render_folder(tmp_path / "obj", 6, size=512)
    ds = ObjectDataset(tmp_path, image_size=32, patch_size=8, num_views=4)
    k = ds[0]["fxfycxcy"]
    expected = torch.tensor([256 / half, 256 / half, 256.0, 256.0]) * 32 / 512
    assert torch.allclose(k, expected.expand(4, 4), rtol=1e-6)


# ----------------------------------------------------------------------------- poses
def test_pose_normalization_is_the_reference(tmp_path):
    true_c2w = _render_folder(tmp_path / "obj", 32)
    ds = ObjectDataset(tmp_path, image_size=32, patch_size=8, num_views=8, seed=5)
    sample = ds[0]
    ids = sample["index"][:, 0]
    c2w = sample["c2w"].double()
    assert torch.allclose(c2w, _reference_normalize(true_c2w[ids]), atol=1e-5)
    # the mean camera is the identity, the largest |translation| is 1 / 1.35
    mean = _reference_normalize(c2w, factor=1 / c2w[:, :3, 3].abs().max().item())
    assert torch.allclose(mean, c2w, atol=1e-5)
    assert torch.allclose(c2w[:, :3, 3].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert c2w[:, :3, 3].abs().max().item() == pytest.approx(1 / 1.35, rel=1e-6)
    # without normalization the cameras are the renders' (w2c read as written, Blender axes converted)
    raw = ObjectDataset(tmp_path, image_size=32, num_views=8, normalize_poses=False, scale=2.0, seed=5)[0]
    expected = true_c2w[ids].clone()
    expected[:, :3, 3] *= 2.0
    assert torch.allclose(raw["c2w"].double(), expected, atol=1e-5)
    uv, depth = project_points(torch.zeros(1, 3).double(), raw["c2w"].double(), raw["fxfycxcy"].double())
    assert (depth > 0).all() and torch.allclose(uv[:, 0], torch.full((8, 2), 16.0, dtype=torch.float64), atol=1e-3)


def test_scene_json_cameras_and_determinism(tmp_path):
    (tmp_path / "metadata").mkdir()
    c2ws, frames = _render_folder(tmp_path / "img", 12), []
    for i, c2w in enumerate(c2ws):
        w2c_gl = invert_pose(opencv_to_opengl(c2w))  # what Blender would write, in the scene format
        frames.append({"image_path": f"../img/{i:03d}.png", "fxfycxcy": [40, 41, 15, 17], "w2c": w2c_gl.tolist()})
    (tmp_path / "metadata" / "obj.json").write_text(json.dumps({"scene_name": "obj", "frames": frames}))
    (tmp_path / "list.txt").write_text("metadata/obj.json\n")
    ds = ObjectDataset(tmp_path / "list.txt", image_size=16, num_views=4)
    sample = ds[0]
    ids = sample["index"][:, 0]
    assert sample["scene_name"] == "obj" and sample["image"].shape == (4, 3, 16, 16)
    assert torch.allclose(sample["fxfycxcy"], torch.tensor([20, 20.5, 7.5, 8.5]).expand(4, 4))  # its own, halved
    assert torch.allclose(sample["c2w"].double(), _reference_normalize(c2ws[ids]), atol=1e-5)
    assert torch.equal(ds[0]["index"], sample["index"])  # (seed, epoch, idx) decide the views
    draws = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.add(tuple(ds[0]["index"][:, 0].tolist()))
    assert len(draws) > 1


# ----------------------------------------------------------------------------- images
def test_alpha_dropped_or_composited(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[...] = [10, 20, 30, 0]  # transparent, with a colour stored under it
    rgba[4:8, 4:8] = [255, 0, 0, 255]
    rgba[0, 15] = [200, 100, 50, 128]
    _render_folder(tmp_path / "obj", 4, rgba=rgba)
    dropped = ObjectDataset(tmp_path, image_size=16, num_views=4)[0]["image"]  # PIL convert("RGB")
    assert torch.allclose(dropped[:, :, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert torch.allclose(dropped[:, :, 0, 15], torch.tensor([200, 100, 50]) / 255.0)
    blue = ObjectDataset(tmp_path, image_size=16, num_views=4, background=(0.0, 0.0, 1.0))[0]["image"]
    assert torch.allclose(blue[:, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(blue[:, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    a = 128 / 255
    expected = torch.tensor([200 / 255 * a, 100 / 255 * a, 50 / 255 * a + (1 - a)])
    assert torch.allclose(blue[:, :, 0, 15], expected, atol=1e-6)


# ----------------------------------------------------------------------------- from a config
def _cfg(dataset_path, *overrides, **objects):
    return config_from_dict({
        "model": {"image_tokenizer": {"image_size": 16, "patch_size": 8},
                  "target_pose_tokenizer": {"image_size": 16, "patch_size": 8}},
        "training": {"dataset_name": "data.dataset_object.ObjaverseDataset", "dataset_path": str(dataset_path),
                     "num_views": 4, "num_input_views": 2, "num_target_views": 2, "objects": objects}}, overrides)


def test_config_sources_and_errors(tmp_path):
    for uid in ("b", "a"):
        _render_folder(tmp_path / "renders" / uid, 9)
    assert [build_dataset(_cfg(tmp_path / "renders"))[i]["scene_name"] for i in (0, 1)] == ["a", "b"]
    (tmp_path / "list.json").write_text(json.dumps({"b": "renders/b"}))
    cfg = config_from_dict({"model": {"image_tokenizer": {"image_size": 16, "patch_size": 8}}, "training": {
        "dataset_name": "object", "dataset_path": "unused", "list_path": str(tmp_path / "list.json"),
        "num_views": 4, "num_input_views": 2, "num_target_views": 2}})
    ds = build_dataset(cfg)  # the reference's training.list_path: {uid: folder}, before dataset_path
    assert len(ds) == 1 and ds[0]["scene_name"] == "b"
    with pytest.raises(ConfigError, match="training.objects.view_sampler"):
        build_dataset(_cfg(tmp_path / "renders", view_sampler="sphere"))
    with pytest.raises(ConfigError, match="training.objects.background"):
        build_dataset(_cfg(tmp_path / "renders", background=[1.0, 1.0]))
    with pytest.raises(FileNotFoundError, match="training.dataset_path.*nowhere"):
        build_dataset(_cfg(tmp_path / "nowhere"))
    (tmp_path / "renders" / "a" / "003.npy").unlink()
    with pytest.raises(FileNotFoundError, match="003.npy"):
        build_dataset(_cfg(tmp_path / "renders")).load(0, [3])


# ----------------------------------------------------------------------------- evaluation mode
def _reference_eval_objects(uid_path_list: dict) -> list[str]:
    """ObjaverseDataset.__init__ with inference.if_inference: the first 100 items, folders of more than 28 entries."""
    import os
    first = {k: v for i, (k, v) in enumerate(uid_path_list.items()) if i < 100}
    return [uid for uid, path in first.items() if len(os.listdir(path)) > 28]


def _reference_eval_views(n: int, num_views: int, rng: random.Random) -> list[int]:
    """ObjaverseDataset.__getitem__ with if_inference (its `random` module swapped for rng)."""
    if n != 14:
        return _reference_views(n, num_views, rng)
    views = [0, 1, 2, 3]
    remaining = num_views - len(views)
    if remaining > 0:
        available = [i for i in range(n) if i not in views]
        views += rng.sample(available, remaining) if len(available) >= remaining else available
    return views


@pytest.mark.parametrize("n", [14, 32, 20])
def test_evaluation_views_are_the_references(n):
    from data.dataset_object import evaluation_views
    for seed in range(30):
        for num_views in (5, 8):
            ours = evaluation_views(n, num_views, random.Random(seed))
            assert ours == _reference_eval_views(n, num_views, random.Random(seed))
            assert len(set(ours)) == num_views
    assert evaluation_views(14, 2, random.Random(0)) == [0, 1]  # the reference would keep 0-3


@pytest.fixture
def eval_objects(tmp_path):
    """102 objects in a {uid: folder} list: o000 of 14 frames and a metadata file (29 entries), o001 of
    14 frames alone (28), o002 of 20 frames, o003-o100 empty, o101 of 20 frames (past the first 100)."""
    renders = tmp_path / "renders"
    uids = {f"o{i:03d}": f"renders/o{i:03d}" for i in range(102)}
    for uid, frames in (("o000", 14), ("o001", 14), ("o002", 20), ("o101", 20)):
        _render_folder(renders / uid, frames, size=16)
    (renders / "o000" / "meta.json").write_text("{}")
    for i in range(3, 101):
        (renders / f"o{i:03d}").mkdir()
    (tmp_path / "objects.json").write_text(json.dumps(uids))
    return tmp_path / "objects.json", {uid: str(tmp_path / path) for uid, path in uids.items()}


def test_evaluation_objects_are_the_references(eval_objects):
    path, absolute = eval_objects
    cfg = _cfg(path, "training.num_input_views=4", "training.num_target_views=3")
    ds = build_dataset(cfg, evaluation=True)
    assert ds.scene_keys == _reference_eval_objects(absolute) == ["o000", "o002"]
    assert ds.counts == {"listed": 102, "considered": 100, "evaluated": 2, "excluded": 98}
    assert "28 entries" in dict(ds.excluded)["o001"]
    first, again = ds[0], build_dataset(cfg, evaluation=True)[0]
    assert first["index"][:4, 0].tolist() == [0, 1, 2, 3] and len(first["index"]) == 7  # inputs + targets
    assert torch.equal(first["index"], again["index"])  # the same views at every run
    assert ds.scene_key(1) == "o002" and ds[1]["image"].shape == (7, 3, 16, 16)
    everything = _cfg(path, "inference.eval_objects=null")  # all: o101 joins
    assert build_dataset(everything, evaluation=True).scene_keys == ["o000", "o002", "o101"]
    with pytest.raises(ConfigError, match="inference.eval_objects=0"):
        _cfg(path, "inference.eval_objects=0")


def test_inference_evaluates_objects(eval_objects, tmp_path):
    """inference.py on objects: no index, the reference's selection, the objects' uids as scene keys."""
    from inference import main
    from model import build_model
    from utils.config import to_dict
    path, _ = eval_objects
    cfg = _cfg(path)
    model = build_model(config_from_dict({"model": {
        "class_name": "efficient_lvsm", "transformer": {"d": 16, "d_head": 8, "n_layer": 1},
        "image_tokenizer": {"image_size": 16, "patch_size": 8},
        "target_pose_tokenizer": {"image_size": 16, "patch_size": 8}}}).model)
    torch.save({"model": model.state_dict()}, tmp_path / "model.pt")
    config = tmp_path / "objects.yaml"
    data = to_dict(cfg)
    data["model"] = {**data["model"], "transformer": {**data["model"]["transformer"], "d": 16, "d_head": 8, "n_layer": 1}}
    config.write_text(json.dumps(data))  # JSON is YAML
    summary = main(["--config", str(config), f"inference.checkpoint_dir={tmp_path / 'model.pt'}",
                    "training.device=cpu", f"inference_out_dir={tmp_path / 'out'}", "inference.generate_website=false"])
    assert summary["scenes"] == 2 and summary["images"] == 4 and summary["index_file"] is None
    assert len(summary["excluded"]) == 98 and summary["counts"]["evaluated"] == 2
    rows = json.loads((tmp_path / "out" / "per_image.json").read_text())
    assert sorted({r["scene"] for r in rows}) == ["o000", "o002"]
