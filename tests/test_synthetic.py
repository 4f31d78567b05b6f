"""Synthetic generator: the scene format, determinism, exact geometry, disjoint textures, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import synthetic, textures


def _generate(out, kind="rooms", seed=0, size=32, frames=8, num_train=2, num_test=2):
    return synthetic.generate(out, kind, num_train, num_test, frames, size, seed, workers=1)


def _load(split_dir: Path, name: str):
    """Scene JSON, images [f, h, w, c] uint8, c2w [f, 4, 4] with OpenCV axes."""
    meta = split_dir / "metadata" / f"{name}.json"
    scene = json.loads(meta.read_text())
    images = np.stack([np.asarray(Image.open(meta.parent / fr["image_path"])) for fr in scene["frames"]])
    c2w = np.linalg.inv(np.array([fr["w2c"] for fr in scene["frames"]]))
    if name.startswith("objects"):  # written with Blender/OpenGL camera axes
        c2w = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
    return scene, images, c2w


def _project(points, c2w, fxfycxcy):
    """Continuous pixel coordinates [n, 2] and depth [n] of world points [n, 3]."""
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]  # rows times R = R^T p
    fx, fy, cx, cy = fxfycxcy
    return np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1), cam[:, 2]


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_writes_the_scene_format(tmp_path, kind):
    counts = _generate(tmp_path, kind)
    assert counts == {"train": 2, "test": 2, "written": 4, "skipped": 0}
    for split in ("train", "test"):
        list_file = tmp_path / split / "full_list.txt"
        lines = list_file.read_text().splitlines()
        assert lines == sorted(lines) and len(lines) == 2
        for line in lines:
            meta = list_file.parent / line
            scene = json.loads(meta.read_text())
            assert set(scene) == {"scene_name", "frames"} and meta.stem == scene["scene_name"]
            assert len(scene["frames"]) == 8
            for frame in scene["frames"]:
                assert set(frame) == {"image_path", "fxfycxcy", "w2c"}
                assert not Path(frame["image_path"]).is_absolute()
                image = Image.open(meta.parent / frame["image_path"])
                assert image.size == (32, 32) and image.mode == ("RGBA" if kind == "objects" else "RGB")
                assert len(frame["fxfycxcy"]) == 4 and np.array(frame["w2c"]).shape == (4, 4)
                rot = np.array(frame["w2c"])[:3, :3]
                np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    index = json.loads((tmp_path / "test" / "evaluation_index.json").read_text())
    assert sorted(index) == [Path(line).stem for line in (tmp_path / "test" / "full_list.txt").read_text().split()]
    for entry in index.values():
        (i, j), targets = entry["context"], entry["target"]
        assert 0 <= i < j < 8 and len(targets) == 3 and all(i < k < j for k in targets)
        assert targets == sorted(set(targets))


def test_deterministic_by_seed(tmp_path):
    files = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        _generate(tmp_path / run, seed=seed, num_test=1)
        files[run] = {p.relative_to(tmp_path / run): p.read_bytes()
                      for p in sorted((tmp_path / run).rglob("*")) if p.is_file()}
    assert files["a"] == files["b"]
    assert files["a"].keys() == files["c"].keys()
    pngs = [k for k in files["a"] if k.suffix == ".png"]
    assert all(files["a"][k] != files["c"][k] for k in pngs)


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_geometry_agrees_across_views(tmp_path, kind):
    """Hits seen from frame 0 project back to their pixels; visible ones have the same colour elsewhere."""
    size, frames = 48, 8
    _generate(tmp_path, kind, size=size, frames=frames, num_train=1, num_test=0)
    name = f"{kind}_00000"
    record, images, c2w = _load(tmp_path / "train", name)
    fxfycxcy = np.array([fr["fxfycxcy"] for fr in record["frames"]])
    scene = synthetic.make_scene(kind, "train", 0, 0, frames, size)
    origins, dirs = synthetic.pixel_rays(c2w[0], fxfycxcy[0], size)
    t, mat, _, _ = synthetic.cast(scene, origins, dirs)
    hit = mat >= 0
    assert hit.sum() > 20
    points = origins[hit] + t[hit, None] * dirs[hit] / np.linalg.norm(dirs[hit], axis=-1, keepdims=True)
    pixels = np.stack(np.mgrid[0:size, 0:size][::-1], -1).reshape(-1, 2)[hit]  # (x, y)
    uv, depth = _project(points, c2w[0], fxfycxcy[0])
    np.testing.assert_allclose(uv, pixels + 0.5, atol=1e-3)  # the camera convention round trip
    assert (depth > 0).all()
    colour0 = images[0].reshape(size * size, -1)[hit, :3].astype(float)
    diffs, exact = [], []
    for k in range(1, frames):
        uv, depth = _project(points, c2w[k], fxfycxcy[k])
        inside = (depth > 0) & (uv >= 0.5).all(-1) & (uv < size - 0.5).all(-1)
        to_point = points[inside] - c2w[k][:3, 3]
        t_k, mat_k, uv_k, normal_k = synthetic.cast(scene, np.broadcast_to(c2w[k][:3, 3], to_point.shape), to_point)
        visible = np.abs(t_k - np.linalg.norm(to_point, axis=-1)) < 1e-3  # nothing in front of it
        colour = colour0[inside][visible]
        # Exact: the point's colour seen along frame k's ray is the colour rendered in frame 0.
        exact.append(np.abs(synthetic.shade(scene, mat_k, uv_k, normal_k)[visible] * 255 - colour).max(-1))
        # Images: frame k's pixels around the projection (nearest of the four, as texture sampling
        # between pixel centres differs) have frame 0's colour.
        x, y = np.floor(uv[inside][visible] - 0.5).astype(int).T
        diffs.append(np.min([np.abs(images[k][y + a, x + b, :3] - colour).max(-1) for a in (0, 1) for b in (0, 1)], 0))
    exact, diffs = np.concatenate(exact), np.concatenate(diffs) / 255
    assert len(diffs) > 100
    assert (exact <= 1.0).mean() > 0.98  # uint8 rounding; float32 may flip a face edge or sphere seam
    assert np.median(diffs) < 0.05 and (diffs < 0.2).mean() > 0.8, (np.median(diffs), (diffs < 0.2).mean())

def test_train_and_test_textures_are_disjoint():
    train, test = textures.texture_sets("train"), textures.texture_sets("test")
    for a, b in zip(train, test):
        assert a and b and not set(a) & set(b)
    assert synthetic.make_scene("rooms", "train", 0, 0, 2, 8).textures.shape[1:] == (textures.TEX,) * 2 + (3,)
    seeds = [synthetic.make_scene("rooms", split, 0, 0, 2, 8).c2w for split in ("train", "test")]
    assert not np.allclose(*seeds)  # disjoint seed streams


def test_style_shares_textures_scales_them_and_the_walk(monkeypatch):
    """textures="shared": a test scene may draw the training photos (one distribution), scenes stay
    disjoint; tile_scale stretches every texture; walk_scale covers part of the walk (the baseline)."""
    drawn = []
    monkeypatch.setattr(synthetic, "photo_texture", lambda rng, name: drawn.append(name) or np.zeros((textures.TEX,) * 2 + (3,), np.float32))
    for i in range(40):
        synthetic.make_scene("rooms", "test", 0, i, 2, 8, synthetic.Style(textures="shared"))
    assert set(drawn) & set(textures.TRAIN_PHOTOS) and set(drawn) & set(textures.TEST_PHOTOS)
    drawn.clear()
    for i in range(40):
        synthetic.make_scene("rooms", "test", 0, i, 2, 8)  # default: disjoint
    assert drawn and set(drawn) <= set(textures.TEST_PHOTOS)
    monkeypatch.undo()

    base = synthetic.make_scene("rooms", "train", 0, 3, 16, 8)
    big = synthetic.make_scene("rooms", "train", 0, 3, 16, 8, synthetic.Style(tile_scale=3.0))
    assert np.allclose(big.tile, 3 * base.tile) and np.allclose(big.c2w, base.c2w)

    whole = synthetic.make_scene("rooms", "train", 0, 3, 33, 8)
    half = synthetic.make_scene("rooms", "train", 0, 3, 17, 8, synthetic.Style(walk_scale=0.5))
    assert np.allclose(half.c2w[:, :3, 3], whole.c2w[:17, :3, 3])  # the first half of the same walk
    with pytest.raises(ValueError, match="textures"):
        synthetic.Style(textures="mixed")


def test_a_folder_keeps_one_set_of_settings(tmp_path):
    synthetic.generate(tmp_path, "rooms", 1, 0, frames=2, size=8)
    with pytest.raises(ValueError, match="tile_scale"):
        synthetic.generate(tmp_path, "rooms", 1, 0, frames=2, size=8, style=synthetic.Style(tile_scale=2))
    assert synthetic.generate(tmp_path, "rooms", 1, 0, frames=2, size=8)["written"] == 0


def test_resumable(tmp_path):
    _generate(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert _generate(tmp_path)["written"] == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    meta = tmp_path / "train" / "metadata" / "rooms_00001.json"
    before = meta.read_bytes()
    meta.unlink()
    assert _generate(tmp_path)["written"] == 1
    assert meta.read_bytes() == before
    assert not list(tmp_path.rglob("*.tmp*"))


def test_objects_alpha_and_cameras_look_at_origin(tmp_path):
    _generate(tmp_path, "objects", size=32, num_train=1, num_test=0)
    record, images, c2w = _load(tmp_path / "train", "objects_00000")
    alpha = images[..., 3]
    assert (alpha > 0).any() and (alpha[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0).all()
    assert set(np.unique(alpha)) <= {0, 255}
    assert (images[..., :3][alpha == 0] == 255).all()
    for frame, pose in zip(record["frames"], c2w):
        uv, depth = _project(np.zeros((1, 3)), pose, frame["fxfycxcy"])
        np.testing.assert_allclose(uv[0], frame["fxfycxcy"][2:], atol=1e-6)
        assert depth[0] > 0 and abs(pose[1, 0]) < 1e-9  # no roll: the camera x axis is level


def test_cli(tmp_path):
    counts = synthetic.main(["--out", str(tmp_path), "--kind", "objects", "--num_train", "3", "--num_test", "0",
                             "--frames", "2", "--size", "16", "--workers", "2"])
    assert counts["written"] == 3 and len((tmp_path / "train" / "full_list.txt").read_text().split()) == 3
    with pytest.raises(ValueError, match="frames"):
        synthetic.generate(tmp_path, "rooms", 1, 1, frames=4, size=16)
