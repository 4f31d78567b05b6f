"""The own-photos command on a synthetic scene exported to each camera format: cameras round trip,
renders and the sanity picture are written, the epipolar check tells the right camera convention
from the wrong one, and bad inputs are errors naming the file at fault."""

import dataclasses
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scripts.render_photos as cli
from data.camera_io import _quat_to_rotmat, read_cameras
from data.dataset_scene import load_view
from data.synthetic import _look, cast, generate, make_scene, render
from model import build_model
from photos.camera_check import (MIN_MATCHES, better_reading, convention_fit, distinctive_pixels, epipolar_distance,
                                 fundamental_matrix, layout_problems, readings)
from photos.pipeline import choose_views, prepare_intrinsics, resolution_warnings
from tests.conftest import ROOT, tiny_config
from utils.config import to_dict
from utils.geometry import _rotmat_to_quat, invert_pose, opencv_to_opengl, project_points

FRAMES, SIZE = 8, 32


def _synthetic(root: Path, kind: str) -> dict:
    """One generated scene: its image files, c2w as written (OpenCV for rooms, OpenGL for objects)."""
    generate(root, kind, 1, 0, frames=FRAMES, size=SIZE, seed=0)
    meta = root / "train" / "metadata" / f"{kind}_00000.json"
    frames = json.loads(meta.read_text())["frames"]
    return {"meta": meta, "images": [(meta.parent / f["image_path"]).resolve() for f in frames],
            "c2w": invert_pose(torch.tensor([f["w2c"] for f in frames], dtype=torch.float64)),
            "k": torch.tensor([f["fxfycxcy"] for f in frames], dtype=torch.float64)}


def _copy_images(scene: dict, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for p in scene["images"]:
        shutil.copy(p, folder / p.name)
    return [p.name for p in scene["images"]]


def export_colmap(scene: dict, root: Path) -> Path:
    """sparse/0/{cameras,images}.txt beside images/, written in reverse id order, quaternions from
    geometry's converter (the reader has its own)."""
    names, model = _copy_images(scene, root / "images"), root / "sparse" / "0"
    model.mkdir(parents=True)
    fx, fy, cx, cy = scene["k"][0].tolist()
    model.joinpath("cameras.txt").write_text(f"# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]\n"
                                             f"1 PINHOLE {SIZE} {SIZE} {fx!r} {fy!r} {cx!r} {cy!r}\n")
    lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i in reversed(range(len(names))):
        w2c = invert_pose(scene["c2w"][i])
        q, t = _rotmat_to_quat(w2c[:3, :3]).tolist(), w2c[:3, 3].tolist()
        lines.append(" ".join(repr(x) for x in [i + 1, *q, *t]) + f" 1 {names[i]}")
        lines.append("" if i % 2 else "10.5 3.25 -1 4.0 5.0 7")  # empty POINTS2D lines too
    model.joinpath("images.txt").write_text("\n".join(lines) + "\n")
    return model


def export_colmap_bin(scene: dict, root: Path) -> Path:
    """sparse/0/{cameras,images,points3D}.bin as COLMAP writes them (little-endian; reconstruction_io.cc),
    packed here with struct: two cameras (PINHOLE, id 7; SIMPLE_RADIAL with k = 0, id 3) shared by the
    images in turn, images in reverse id order, some with 2D points."""
    names, model = _copy_images(scene, root / "images"), root / "sparse" / "0"
    model.mkdir(parents=True)
    fx, fy, cx, cy = scene["k"][0].tolist()
    assert fx == fy  # the synthetic cameras: SIMPLE_RADIAL's single focal length fits them
    cams = struct.pack("<Q", 2) + struct.pack("<iiQQ4d", 7, 1, SIZE, SIZE, fx, fy, cx, cy) \
        + struct.pack("<iiQQ4d", 3, 2, SIZE, SIZE, fx, cx, cy, 0.0)
    model.joinpath("cameras.bin").write_bytes(cams)
    images = struct.pack("<Q", len(names))
    for i in reversed(range(len(names))):
        w2c = invert_pose(scene["c2w"][i])
        q, t = _rotmat_to_quat(w2c[:3, :3]).tolist(), w2c[:3, 3].tolist()
        points = [(10.5, 3.25, -1), (4.0, 5.0, 7)] if i % 2 else []
        images += struct.pack("<i7di", i + 1, *q, *t, 7 if i % 2 else 3) + names[i].encode() + b"\0"
        images += struct.pack("<Q", len(points)) + b"".join(struct.pack("<ddq", *p) for p in points)
    model.joinpath("images.bin").write_bytes(images)
    model.joinpath("points3D.bin").write_bytes(struct.pack("<Q", 0))
    return model


def export_transforms(scene: dict, root: Path, opengl_c2w: torch.Tensor) -> Path:
    """nerfstudio transforms.json: shared intrinsics at the top level, OpenGL c2w per frame."""
    names = _copy_images(scene, root / "images")
    fx, fy, cx, cy = scene["k"][0].tolist()
    frames = [{"file_path": f"images/{n}", "transform_matrix": m.tolist()} for n, m in zip(names, opengl_c2w)]
    path = root / "transforms.json"
    path.write_text(json.dumps({"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": SIZE, "h": SIZE, "frames": frames}))
    return path


def export_plain(scene: dict, root: Path) -> Path:
    names = _copy_images(scene, root / "images")
    frames = [{"image": f"images/{n}", "c2w": c.tolist(), "fxfycxcy": k.tolist()}
              for n, c, k in zip(names, scene["c2w"], scene["k"])]
    path = root / "cameras.json"
    path.write_text(json.dumps({"frames": frames}))
    return path


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("rooms")
    scene = _synthetic(root / "data", "rooms")
    scene["colmap"] = export_colmap(scene, root / "colmap")
    scene["colmap_bin"] = export_colmap_bin(scene, root / "colmap_bin")
    scene["transforms"] = export_transforms(scene, root / "nerfstudio", opencv_to_opengl(scene["c2w"]))
    scene["plain"] = export_plain(scene, root / "plain")
    cfg = tiny_config("efficient_lvsm")
    scene["ckpt"] = root / "tiny.pt"
    state = build_model(cfg.model).state_dict()
    torch.save({"model": state, "config": to_dict(cfg), "image_size": SIZE}, scene["ckpt"])
    return scene


def _run(rooms: dict, cameras: Path, out: Path, *extra: str) -> int:
    return cli.main(["--checkpoint", str(rooms["ckpt"]), "--cameras", str(cameras), "--out", str(out),
                     "--device", "cpu", *extra])


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("fmt", ["colmap", "colmap_bin", "transforms", "plain", "scene_json"])
def test_cameras_round_trip(rooms, fmt):
    path = rooms["meta"] if fmt == "scene_json" else rooms[fmt]
    posed = read_cameras(path)
    assert [Path(n).name for n in posed.names] == [p.name for p in rooms["images"]]
    assert torch.allclose(posed.c2w, rooms["c2w"], atol=1e-5)
    assert torch.allclose(posed.fxfycxcy, rooms["k"], atol=1e-5)
    assert all(s == (SIZE, SIZE) for s in posed.sizes)


def test_quaternion_convention():
    """COLMAP's (qw, qx, qy, qz) is Hamilton, w first: a turn about z by theta."""
    theta = 0.3
    r = _quat_to_rotmat(math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2))
    expected = torch.tensor([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    assert torch.allclose(r, expected.double(), atol=1e-12)


def test_colmap_distortion_warns_and_camera_angle(rooms, tmp_path):
    model = export_colmap(rooms, tmp_path / "c")
    text = model.joinpath("cameras.txt").read_text().replace("PINHOLE", "OPENCV").rstrip() + " 0.1 0 0 0\n"
    model.joinpath("cameras.txt").write_text(text)
    with pytest.warns(UserWarning, match="distortion"):
        read_cameras(model)
    data = json.loads(rooms["transforms"].read_text())
    fov = 2 * math.atan(SIZE / 2 / rooms["k"][0, 0].item())
    data = {"camera_angle_x": fov, "frames": data["frames"]}  # Blender style: no w, h, cx, cy
    rooms["transforms"].with_name("blender.json").write_text(json.dumps(data))
    assert torch.allclose(read_cameras(rooms["transforms"].with_name("blender.json")).fxfycxcy, rooms["k"], atol=1e-5)


def test_prepared_intrinsics_match_load_view(tmp_path):
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "wide.png")
    k = torch.tensor([40.0, 41.0, 23.0, 17.0])
    for square in (False, True):
        _, expected = load_view(tmp_path / "wide.png", k.tolist(), 16, 8, square)
        assert torch.allclose(prepare_intrinsics(k, (48, 32), 16, 8, square), expected, atol=1e-5)


def test_choose_views_and_resolution_warnings():
    names = ["a.png", "b.png", "c.png", "d.png"]
    assert choose_views(names, None, "c", 2) == ([0, 1], [2])
    with pytest.raises(ValueError, match="held out"):
        choose_views(names, "0,2", "c.png", None)
    with pytest.raises(ValueError, match="'e.png' names 0 images"):
        choose_views(names, "e.png", None, None)
    found = resolution_warnings(32, True, 16, (16, 24), [(48, 32)])
    assert any("trained at 32" in m for m in found) and any("square crops" in m for m in found)


# ----------------------------------------------------------------------------- the command
@pytest.mark.parametrize("fmt", ["colmap", "transforms", "plain"])
def test_command_writes_renders(rooms, tmp_path, fmt):
    extra = ["--video", "interpolate", "--frames", "3"] if fmt == "plain" else []
    assert _run(rooms, rooms[fmt], tmp_path, "--targets", "6,7", "--num_inputs", "2", *extra) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["inputs"]) == 2
    assert [Path(r["name"]).name for r in summary["targets"]] == ["00006.png", "00007.png"]
    assert all(math.isfinite(r["psnr"]) for r in summary["targets"])
    assert Image.open(tmp_path / "targets" / "01_00007_render.png").size == (SIZE, SIZE)
    assert (tmp_path / "targets" / "01_00007_gt.png").is_file() and (tmp_path / "cameras.png").is_file()
    if fmt == "plain":
        assert len(list((tmp_path / "video").glob("frame_*.png"))) == 3
    assert not list(tmp_path.rglob("*.tmp*"))


def test_target_cameras_file(rooms, tmp_path):
    frames = [{"c2w": rooms["c2w"][5].tolist(), "fxfycxcy": rooms["k"][5].tolist()}]
    (tmp_path / "targets.json").write_text(json.dumps({"frames": frames}))
    assert _run(rooms, rooms["plain"], tmp_path / "out", "--inputs", "0,3",
                "--target_cameras", str(tmp_path / "targets.json")) == 0
    assert (tmp_path / "out" / "target_cameras" / "000.png").is_file()


def _true_matches(scene, uv0: torch.Tensor, j: int):
    """Where the surface points seen at uv0 [n, 2] in view 0 project into view j (exact geometry):
    uv [n, 2] and whether each lies in front of camera j [n]."""
    fx, fy, cx, cy = scene.fxfycxcy[0]
    cam = np.stack([(uv0[:, 0].numpy() - cx) / fx, (uv0[:, 1].numpy() - cy) / fy, np.ones(len(uv0))], -1)
    dirs = cam @ scene.c2w[0][:3, :3].T
    t, *_ = cast(scene, np.broadcast_to(scene.c2w[0][:3, 3], dirs.shape), dirs)
    points = scene.c2w[0][:3, 3] + t[:, None] * dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    uv, depth = project_points(torch.from_numpy(points), torch.from_numpy(scene.c2w[j]),
                               torch.from_numpy(scene.fxfycxcy[j]))
    return uv, depth > 0


def test_epipolar_check_tells_conventions_apart(rooms):
    scene = make_scene("rooms", "train", 0, 0, FRAMES, SIZE)
    assert np.allclose(scene.c2w, rooms["c2w"].numpy(), atol=1e-6)  # the generator's scene, rebuilt
    image0 = torch.from_numpy(np.asarray(Image.open(rooms["images"][0]), np.float32) / 255).permute(2, 0, 1)
    uv0 = distinctive_pixels(image0)
    assert len(uv0) >= 4
    right = read_cameras(rooms["transforms"])  # OpenGL, as written
    wrong = read_cameras(rooms["transforms"], convention="opencv")
    # Views 3-5 are 0.65-1.1 m along the walk from view 0. A near-forward motion makes the flipped axes' lines
    # almost right (a mirror about the epipole), so views 1-2 would tell less.
    for j in (3, 4, 5):
        uv_j, front = _true_matches(scene, uv0, j)
        assert front.sum() >= 3
        dist = {name: epipolar_distance(fundamental_matrix(p.c2w[0], p.fxfycxcy[0], p.c2w[j], p.fxfycxcy[j]),
                                        uv0[front], uv_j[front]) for name, p in (("right", right), ("wrong", wrong))}
        assert dist["right"].max() < 1e-3, dist
        assert dist["wrong"].median() > 3.0, dist  # pixels, in 32 px images
    assert layout_problems(right.c2w) == []


# ----------------------------------------------------------------------------- bad inputs
def test_unreadable_image_names_the_file(rooms, tmp_path, capsys):
    root = tmp_path / "p"
    path = export_plain(rooms, root)
    (root / "images" / "00003.png").write_bytes(b"not a png")
    assert _run(rooms, path, tmp_path / "out", "--targets", "7") == 1
    err = capsys.readouterr().err
    assert "00003.png" in err and "cannot be opened" in err


def test_camera_count_mismatch(rooms, tmp_path, capsys):
    root = tmp_path / "p"
    path = export_plain(rooms, root)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({"frames": data["frames"][:-1]}))  # 7 cameras, 8 images
    assert _run(rooms, path, tmp_path / "out", "--targets", "1") == 1
    err = capsys.readouterr().err
    assert str(path) in err and "7 cameras for 8 images" in err and "00007.png" in err
    data["frames"][2]["image"] = "images/missing.png"
    path.write_text(json.dumps(data))
    assert _run(rooms, path, tmp_path / "out", "--targets", "1") == 1
    assert "missing.png" in capsys.readouterr().err


def test_wrong_convention_flagged(tmp_path, rooms, capsys):
    """Inward-looking cameras (the objects scene) read with flipped axes look away from each other."""
    scene = _synthetic(tmp_path / "data", "objects")  # c2w written with OpenGL axes
    path = export_transforms(scene, tmp_path / "ns", scene["c2w"])
    assert _run(rooms, path, tmp_path / "bad", "--targets", "7", "--convention", "opencv") == 1
    err = capsys.readouterr().err
    assert "--convention opengl" in err and str(path) in err
    assert (tmp_path / "bad" / "cameras.png").is_file()  # written first: the picture shows the fault
    assert _run(rooms, path, tmp_path / "good", "--targets", "7") == 0
    # c2w of cameras looking at the origin, read as w2c, put every camera at (0, 0, distance)
    assert _run(rooms, path, tmp_path / "w2c", "--targets", "7", "--pose", "w2c") == 1
    assert "sit at one point" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the photos' own verdict
def _sideways(root: Path) -> Path:
    """A hand-held sideways capture in a synthetic room: cameras slid 0.6 m along view 0's x axis,
    swaying 15 cm up and down, each turned to keep a point 1.5 m ahead in view; images rendered from
    the known cameras, written as plain JSON (OpenCV c2w). (A pure slide without sway or turn gives
    every reading the same epipolar lines: nothing to tell apart, and nothing to get wrong.)"""
    scene = make_scene("rooms", "train", 0, 0, FRAMES, SIZE)
    start = scene.c2w[0]
    position = (start[:3, 3] + np.linspace(-0.3, 0.3, FRAMES)[:, None] * start[:3, 0]
                + 0.15 * np.sin(np.linspace(0, 2 * np.pi, FRAMES))[:, None] * start[:3, 1])
    c2w = _look(position, start[:3, 3] + 1.5 * start[:3, 2] - position)
    scene = dataclasses.replace(scene, c2w=c2w, fxfycxcy=np.repeat(scene.fxfycxcy[:1], FRAMES, axis=0))
    (root / "images").mkdir(parents=True)
    frames = []
    for f in range(FRAMES):
        Image.fromarray(render(scene, f, SIZE)[..., :3]).save(root / "images" / f"{f:05d}.png")
        frames.append({"image": f"images/{f:05d}.png", "c2w": c2w[f].tolist(), "fxfycxcy": scene.fxfycxcy[f].tolist()})
    (root / "cameras.json").write_text(json.dumps({"frames": frames}))
    return root / "cameras.json"


def _fit(path: Path, **reading):
    posed = read_cameras(path, **reading)
    ids = list(range(FRAMES - 1))
    images, ks = zip(*(load_view(posed.paths[i], posed.fxfycxcy[i].tolist(), SIZE, 8, False) for i in ids))
    fit = convention_fit(torch.stack(images), torch.stack(ks), posed.c2w[ids], posed.convention, posed.pose)
    return fit, better_reading(fit, posed.convention, posed.pose)


def test_readings_are_the_four_ways_to_read_a_file(rooms):
    """readings() of cameras read one way equal what camera_io gives when reading the file each other way."""
    current = read_cameras(rooms["transforms"], convention="opencv", pose="w2c")
    found = readings(current.c2w, "opencv", "w2c")
    for (conv, pose), c2w in found.items():
        assert torch.allclose(c2w, read_cameras(rooms["transforms"], convention=conv, pose=pose).c2w, atol=1e-9)


def test_photos_name_the_reading_of_a_forward_and_a_sideways_capture(rooms, tmp_path):
    """Points matched between the input images fit the true cameras (known to the generator) to about a
    pixel; every wrong reading is told apart and the right one named, for the forward walk and a dolly."""
    sideways = _sideways(tmp_path / "side")
    for path, right in ((rooms["transforms"], ("opengl", "c2w")), (sideways, ("opencv", "c2w"))):
        for conv in ("opencv", "opengl"):
            for pose in ("c2w", "w2c"):
                fit, better = _fit(path, convention=conv, pose=pose)
                assert fit.matches >= MIN_MATCHES
                assert fit.median_px[right] < 1.0, (path, fit)
                assert better == (None if (conv, pose) == right else right), (path, conv, pose, fit)


def test_command_names_the_flag_from_the_photos(rooms, tmp_path, capsys):
    """A forward capture with flipped axes keeps a plausible layout; the photos still flag it."""
    assert _run(rooms, rooms["transforms"], tmp_path / "a", "--targets", "7", "--convention", "opencv") == 1
    err = capsys.readouterr().err
    assert str(rooms["transforms"]) in err and "the photos fit another camera convention" in err
    assert "Pass --convention opengl;" in err and "--pose" not in err.split("Pass")[1].split(";")[0]
    assert (tmp_path / "a" / "cameras.png").is_file()
    sideways = _sideways(tmp_path / "side")
    assert _run(rooms, sideways, tmp_path / "b", "--targets", "7", "--pose", "w2c") == 1
    assert "Pass --pose c2w;" in capsys.readouterr().err
    assert _run(rooms, sideways, tmp_path / "c", "--targets", "7", "--pose", "w2c", "--ignore_camera_check") == 0
    assert "Pass --pose c2w;" in capsys.readouterr().err  # a warning now
    assert _run(rooms, sideways, tmp_path / "d", "--targets", "7") == 0
    assert "camera" not in capsys.readouterr().err


def test_full_ring_of_cameras(tmp_path, rooms, capsys):
    """16 cameras all around an object: read right, no complaint (opposite cameras face each other);
    with flipped axes the message names --convention opengl; read as w2c, the one-point message."""
    frames = 16
    generate(tmp_path / "data", "objects", 1, 0, frames=frames, size=SIZE, seed=1)
    meta = tmp_path / "data" / "train" / "metadata" / "objects_00000.json"
    records = json.loads(meta.read_text())["frames"]
    c2w = invert_pose(torch.tensor([f["w2c"] for f in records], dtype=torch.float64))  # OpenGL axes
    centres = c2w[:, :3, 3]
    azimuth = torch.atan2(centres[:, 0], centres[:, 2])
    assert float((azimuth.sort().values.diff()).max()) < math.radians(30)  # a full ring, no gap
    scene = {"images": [(meta.parent / f["image_path"]).resolve() for f in records], "c2w": c2w,
             "k": torch.tensor([f["fxfycxcy"] for f in records], dtype=torch.float64)}
    path = export_transforms(scene, tmp_path / "ring", c2w)
    assert _run(rooms, path, tmp_path / "good", "--targets", "3,11", "--num_inputs", "6") == 0
    assert "camera" not in capsys.readouterr().err
    assert _run(rooms, path, tmp_path / "flip", "--targets", "3,11", "--num_inputs", "6", "--convention", "opencv") == 1
    err = capsys.readouterr().err
    assert "pass --convention opengl;" in err and "--pose" not in err  # w2c would put them at one point
    assert "look away from each other" in err or "the photos fit another camera convention" in err
    assert _run(rooms, path, tmp_path / "w2c", "--targets", "3", "--pose", "w2c") == 1
    err = capsys.readouterr().err
    assert "sit at one point" in err and "--pose c2w" in err


def test_binary_colmap_model_renders_and_matches_the_text_form(rooms, tmp_path, capsys):
    """COLMAP's default output: the binary model reads as the text one does, and the command renders from it."""
    text, binary = read_cameras(rooms["colmap"]), read_cameras(rooms["colmap_bin"])
    assert binary.names == text.names and torch.equal(binary.c2w, text.c2w)
    assert torch.equal(binary.fxfycxcy, text.fxfycxcy)
    project = rooms["colmap_bin"].parent.parent  # a folder with sparse/0 inside is found too
    assert torch.equal(read_cameras(project).c2w, text.c2w)
    assert _run(rooms, rooms["colmap_bin"], tmp_path / "out", "--targets", "1") == 0
    assert len(list((tmp_path / "out" / "targets").glob("*_render.png"))) == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text())


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin"])
def test_damaged_binary_colmap_names_the_file(rooms, tmp_path, capsys, name):
    model = tmp_path / "sparse" / "0"
    shutil.copytree(rooms["colmap_bin"], model)
    data = (model / name).read_bytes()
    (model / name).write_bytes(data[:len(data) - 5])  # cut inside the last entry
    assert _run(rooms, model, tmp_path / "out", "--targets", "1") == 1
    err = capsys.readouterr().err
    assert str(model / name) in err and "truncated" in err
    (model / name).write_bytes(data + b"\0\0")  # trailing bytes: not a COLMAP file
    assert _run(rooms, model, tmp_path / "out", "--targets", "1") == 1
    assert "bytes left after the last entry" in capsys.readouterr().err
