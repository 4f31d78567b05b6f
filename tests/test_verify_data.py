"""The dataset checker on a small hand-written dataset: one good scene and one of each fault."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from data.scene_format import check_scene, read_scene_json, read_scene_list, resolve_path

ROOT = Path(__file__).resolve().parents[1]


def _write_scene(split: Path, name: str, n: int) -> Path:
    (split / "images" / name).mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8)).save(split / "images" / name / f"{i:05d}.jpg")
        w2c = np.eye(4)
        w2c[:3, 3] = [0.1 * i, 0.0, 1.0]
        frames.append({"image_path": f"../images/{name}/{i:05d}.jpg", "fxfycxcy": [8.0, 8.0, 4.0, 4.0],
                       "w2c": w2c.tolist()})
    path = split / "metadata" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scene_name": name, "frames": frames}))
    return path


def _dataset(tmp_path) -> Path:
    split = tmp_path / "train"
    _write_scene(split, "good", 6)
    _write_scene(split, "missing_image", 6)
    (split / "images" / "missing_image" / "00003.jpg").unlink()
    nan = _write_scene(split, "nan_pose", 6)
    scene = json.loads(nan.read_text())
    scene["frames"][2]["w2c"][0][3] = float("nan")  # json writes NaN; the checker must catch it
    nan.write_text(json.dumps(scene))
    _write_scene(split, "too_short", 3)
    names = ["good", "missing_image", "nan_pose", "too_short"]
    (split / "full_list.txt").write_text("".join(f"metadata/{n}.json\n" for n in names) + "\n")
    return split / "full_list.txt"


def _verify(*args):
    return subprocess.run([sys.executable, "-m", "scripts.verify_data", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_scene_finds_each_fault(tmp_path):
    list_file = _dataset(tmp_path)
    paths = {p.stem: p for p in read_scene_list(list_file)}  # blank trailing line skipped
    assert list(paths) == ["good", "missing_image", "nan_pose", "too_short"]
    assert check_scene(paths["good"], 4, 3, "all") is None
    assert "frame 3: image not found" in check_scene(paths["missing_image"], 4, 3, "all")
    assert check_scene(paths["missing_image"], 4, 3, "first") is None  # only frame 0 looked at
    assert "non-finite" in check_scene(paths["nan_pose"], 4, 3, "none")
    assert "3 frames" in check_scene(paths["too_short"], 4, 3, "all")
    assert "3 frames" in check_scene(paths["too_short"], 2, 3, "all")  # must exceed min_frame_dist


def test_verify_script(tmp_path):
    list_file = _dataset(tmp_path)
    result = _verify(str(list_file), "--num_views", "4", "--min_frame_dist", "3")
    assert result.returncode == 1, result.stderr
    assert "1 scenes ok, 3 at fault" in result.stdout
    for name in ("missing_image", "nan_pose", "too_short"):
        assert f"{name}.json:" in result.stdout
    assert "good.json:" not in result.stdout

    good_only = tmp_path / "good_list.txt"
    good_only.write_text("train/metadata/good.json\n")
    assert _verify(str(good_only), "--num_views", "4", "--min_frame_dist", "3").returncode == 0
    assert _verify(str(tmp_path / "absent.txt")).returncode == 2


def test_readers_name_the_culprit(tmp_path):
    assert resolve_path("../a/b.jpg", tmp_path / "meta" / "s.json") == tmp_path / "meta" / ".." / "a" / "b.jpg"
    assert resolve_path(str(tmp_path / "x"), Path("rel/file.txt")) == tmp_path / "x"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scene_name": "s", "frames": [{"image_path": "a", "w2c": []}]}))
    try:
        read_scene_json(bad)
    except ValueError as e:
        assert str(bad) in str(e) and "fxfycxcy" in str(e)
    else:
        raise AssertionError("missing key not reported")
    try:
        read_scene_list(tmp_path / "none.txt")
    except FileNotFoundError as e:
        assert "none.txt" in str(e)
    else:
        raise AssertionError("missing list not reported")
