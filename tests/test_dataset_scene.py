import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from data.dataset_scene import SceneDataset, collate, split_views, spread_context
from scripts.make_eval_index import make_index
from tests.conftest import random_views
from utils.geometry import invert_pose


def write_scene(root, name, num_frames, h=48, w=64, seed=0, break_frame=None):
    """A scene in the reference format with relative paths; returns its JSON path."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "images" / name).mkdir(parents=True, exist_ok=True)
    _, c2w, _ = random_views(1, num_frames, seed=seed)
    frames = []
    for i in range(num_frames):
        rng = np.random.default_rng(seed * 1000 + i)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / name / f"{i:03d}.png")
        frames.append({"image_path": f"../images/{name}/{i:03d}.png", "fxfycxcy": [50.0, 52.0, w / 2, h / 2],
                       "w2c": invert_pose(c2w[0, i].double()).tolist()})
    if break_frame is not None:
        (root / "images" / name / f"{break_frame:03d}.png").write_bytes(b"not a png")
    path = root / "metadata" / f"{name}.json"
    path.write_text(json.dumps({"scene_name": name, "frames": frames}))
    return path


@pytest.fixture
def dataset_dir(tmp_path):
    root = tmp_path / "test"
    write_scene(root, "a", 40, seed=1)
    write_scene(root, "b", 35, seed=2)
    write_scene(root, "short", 6, seed=3)
    write_scene(root, "broken", 40, seed=4, break_frame=5)
    (root / "full_list.txt").write_text("metadata/a.json\nmetadata/b.json\n\nmetadata/short.json\nmetadata/broken.json\n")
    return root


def test_training_sample(dataset_dir):
    ds = SceneDataset(dataset_dir / "full_list.txt", image_size=32, patch_size=8, num_views=4, min_frame_dist=10,
                      max_frame_dist=30, scene_scale_factor=1.35)
    sample = ds[0]
    assert sample["image"].shape == (4, 3, 32, 32) and sample["scene_name"] == "a"
    frames = sample["index"][:, 0].tolist()
    assert 10 <= frames[1] - frames[0] <= 30 and all(frames[0] < f < frames[1] for f in frames[2:])
    # 64x48 -> resized to 40x32 (width rounded to the patch), centre-cropped to 32x32
    assert torch.allclose(sample["fxfycxcy"][0], torch.tensor([50 * 40 / 64, 52 * 32 / 48, 16.0, 16.0]))
    t = sample["c2w"][:, :3, 3]
    assert t.abs().max().item() == pytest.approx(1 / 1.35, rel=1e-5)  # scene normalization


def test_sampling_is_reproducible_per_epoch(dataset_dir):
    ds = SceneDataset(dataset_dir / "full_list.txt", image_size=32, num_views=4, min_frame_dist=10, seed=3)
    first = ds[1]["index"]
    assert torch.equal(first, ds[1]["index"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[1]["index"])


def test_bad_scenes_are_skipped_and_reported(dataset_dir):
    ds = SceneDataset(dataset_dir / "full_list.txt", image_size=32, num_views=4, min_frame_dist=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short = ds[2]
        batch = collate([ds[3], short])
    assert short["skipped"][0][0] == "short" and "cannot give 4 views" in short["skipped"][0][1]
    assert short["scene_name"] != "short"
    assert caught
    reasons = dict(batch["skipped"])
    assert "short" in reasons
    if "broken" in reasons:  # the broken frame is only hit when the sampler picks it
        assert "005.png" in reasons["broken"]


def test_evaluation_index(dataset_dir, tmp_path):
    index = {"a": {"context": [2, 30], "target": [10, 12, 14]}, "b": None,
             "gone": {"context": [0, 9], "target": [3]}, "broken": {"context": [0, 8], "target": [5]}}
    (tmp_path / "index.json").write_text(json.dumps(index))
    ds = SceneDataset(dataset_dir / "full_list.txt", image_size=32, num_input_views=4, num_target_views=2,
                      eval_index=tmp_path / "index.json")
    assert ds.counts["evaluated"] == 2 and ds.counts["skipped_by_index"] == 1
    assert ds.counts["missing_on_disk"] == 1 and ds.counts["missing_on_disk_names"] == ["gone"]
    assert ds[0]["index"][:, 0].tolist() == [2, 11, 21, 30, 10, 12]
    with pytest.raises(OSError, match="005.png"):
        ds[1]  # evaluation never skips silently: the broken frame's file is named


def test_spread_context():
    assert spread_context([0, 10], 2) == [0, 10]
    assert spread_context([0, 10], 1) == [0]
    assert spread_context([0, 10], 3) == [0, 5, 10]


def test_split_views():
    batch = collate([{"image": torch.rand(5, 3, 8, 8), "c2w": torch.eye(4).repeat(5, 1, 1) * i,
                      "fxfycxcy": torch.rand(5, 4), "index": torch.arange(10).view(5, 2), "scene_name": "s",
                      "skipped": []} for i in range(2)])
    inputs, targets = split_views(batch, 2, 3, target_has_input=False)
    assert inputs["image"].shape == (2, 2, 3, 8, 8) and torch.equal(targets["index"], batch["index"][:, 2:])
    g = torch.Generator().manual_seed(0)
    _, targets = split_views(batch, 2, 3, target_has_input=True, generator=g)
    assert targets["c2w"].shape == (2, 3, 4, 4) and torch.equal(targets["c2w"][1], batch["c2w"][1, :3])
    with pytest.raises(ValueError, match="need more than the 5 views"):
        split_views(batch, 3, 3, target_has_input=False)


def test_make_eval_index(dataset_dir):
    index = make_index(dataset_dir / "full_list.txt", context_gap=20, num_targets=3, seed=0)
    assert index == make_index(dataset_dir / "full_list.txt", context_gap=20, num_targets=3, seed=0)
    assert index["short"] is None
    first, last = index["a"]["context"]
    assert last - first == 20 and all(first < t < last for t in index["a"]["target"])
    assert index != make_index(dataset_dir / "full_list.txt", context_gap=20, num_targets=3, seed=1)


def test_frame_cache_gives_the_same_samples_and_reads_each_frame_once(dataset_dir, monkeypatch):
    import data.dataset_scene as ds_module

    kwargs = dict(image_size=32, patch_size=8, num_views=4, min_frame_dist=10, max_frame_dist=30, seed=5)
    plain = SceneDataset(dataset_dir / "full_list.txt", **kwargs)
    cached = SceneDataset(dataset_dir / "full_list.txt", cache_frames=True, **kwargs)
    samples = []
    for epoch in range(4):
        plain.set_epoch(epoch)
        samples += [plain[i] for i in (0, 1)]
    reads = []
    real = ds_module.load_view
    monkeypatch.setattr(ds_module, "load_view", lambda path, *a: reads.append(str(path)) or real(path, *a))
    for epoch in range(4):
        cached.set_epoch(epoch)
        for i in (0, 1):
            a, b = samples.pop(0), cached[i]
            for key in ("image", "c2w", "fxfycxcy", "index"):
                assert torch.equal(a[key], b[key]), key
    assert len(reads) == len(set(reads)) == len(cached.frame_cache)  # each frame decoded once
    assert len(reads) < 4 * 2 * 4  # 32 frames were asked for; some came from the cache


def test_a_scene_with_frames_of_different_sizes_is_named_skipped_and_counted(tmp_path):
    """Its frames would not stack: the error names the scene and the sizes, and training replaces it."""
    import warnings as _warnings

    from PIL import Image

    from data import synthetic
    from data.dataset_scene import SceneDataset
    synthetic.generate(tmp_path, "rooms", 2, 0, frames=10, size=32, seed=0)
    odd = tmp_path / "train" / "images" / "rooms_00001"
    first = sorted(odd.glob("*.png"))[0]
    Image.open(first).resize((64, 32)).save(first)  # one frame twice as wide
    ds = SceneDataset(tmp_path / "train" / "full_list.txt", image_size=32, patch_size=8, num_views=4,
                      num_input_views=2, num_target_views=2, min_frame_dist=3, max_frame_dist=8, square_crop=False)
    path = ds.scene_paths[1]
    with pytest.raises(ValueError, match=f"{path}: its frames prepare to different sizes"):
        ds.load(path, ds.read_scene(path), [0, 1, 2, 3], 1)
    ds.select_frames = lambda num_frames, rng: [0, 1, 2, 3]  # the odd frame is in every draw
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        sample = ds[1]
    assert sample["skipped"] and sample["skipped"][0][0] == "rooms_00001" and sample["scene_name"] == "rooms_00000"
    assert any("rooms_00001" in str(w.message) for w in caught)
