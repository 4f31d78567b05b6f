"""Cameras of the user's own photos: COLMAP models (binary or text), nerfstudio / instant-ngp transforms.json and
plain JSON, read into the project's convention (utils.geometry: c2w with OpenCV axes, fxfycxcy in
pixels of the image file as stored, pixel centres at +0.5 as COLMAP and nerfstudio also use).

| format          | file                       | pose as stored             | camera axes |
|-----------------|----------------------------|----------------------------|-------------|
| COLMAP text     | cameras.txt + images.txt   | w2c (qw qx qy qz, tx ty tz) | opencv      |
| COLMAP binary   | cameras.bin + images.bin   | w2c (the same, as float64)  | opencv      |
| transforms.json | frames[].transform_matrix  | c2w                        | opengl      |
| plain JSON      | frames[].c2w / w2c / pose  | per key; "pose" needs pose= | opencv      |

`convention=` / `pose=` (the command's --convention / --pose) override the format's default. There
is no `up` option: the model only sees poses after normalize_scene_poses, which re-expresses them in
the mean camera's frame, so the world's up axis never reaches it.

Plain JSON: {"frames": [{"image": file, "c2w" | "w2c" | "pose": 4x4 (or 3x4), "fxfycxcy": [4] |
"K": 3x3, "width"/"height" optional}]}; intrinsics and size may sit at the top level for all frames;
"image_path" / "file_path" are accepted for "image" (our scene JSON loads as it is). Intrinsics
written for another size of the same aspect ratio are rescaled to the image file, with a warning.
"""

import json
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from data.scene_format import IMAGE_ERRORS
from utils.geometry import check_intrinsics, check_poses, invert_pose, opengl_to_opencv

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FORMATS = ("auto", "colmap", "transforms", "json")
CONVENTIONS = ("opencv", "opengl")
POSES = ("c2w", "w2c")
# COLMAP camera models (src/colmap/sensor/models.h): parameter names; distortion terms are dropped.
COLMAP_MODELS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}
DISTORTION_KEYS = ("k", "k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")
# Binary models store the model as an id (the order of CAMERA_MODEL_DEFINITIONS in models.h) and the
# parameters without a count: every model's parameter count, the fisheye ones included, so that a
# model we do not render from is named rather than misread.
COLMAP_MODEL_IDS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
                    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
                    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12)}
EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 means upright
ASPECT_TOL = 0.01  # relative: intrinsics written for a resized copy of the image are rescaled


@dataclass
class RawCamera:
    """One camera as its file states it, before conventions and image sizes are applied."""
    name: str  # the image as the camera file names it
    matrix: torch.Tensor  # [4, 4] float64: c2w or w2c, per `pose`
    pose: str | None  # "c2w" / "w2c" as the format states it; None where it leaves it open
    intrinsics: dict  # some of fx, fy, cx, cy, angle_x, angle_y; w, h: the image size they are for
    item: str  # where in the file, for messages: "images.txt line 12", "frames[3]"


@dataclass
class CameraFile:
    cameras: list[RawCamera]
    source: Path  # the file named in messages
    kind: str  # "colmap" | "transforms" | "json"
    convention: str  # the format's camera axes
    base: Path  # folder the image names are relative to


@dataclass
class PosedImages:
    names: list[str]
    paths: list[Path]
    sizes: list[tuple[int, int]]  # (w, h) of each image file
    c2w: torch.Tensor  # [n, 4, 4] float64, OpenCV axes
    fxfycxcy: torch.Tensor  # [n, 4] float64, pixels of the image file
    source: Path
    convention: str  # camera axes the file was read with
    pose: str  # how its matrices were read: "c2w" or "w2c" (the first camera's)


# ----------------------------------------------------------------------------- parsing
def _matrix(value, where: str) -> torch.Tensor:
    """4x4 or 3x4 nested list -> [4, 4] float64."""
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: pose must be a 4x4 list of numbers ({err})") from None
    if m.shape == (3, 4):
        m = torch.cat([m, m.new_tensor([[0.0, 0.0, 0.0, 1.0]])])
    if m.shape != (4, 4):
        raise ValueError(f"{where}: pose must be 4x4 (or 3x4), got shape {list(m.shape)}")
    return m


def _quat_to_rotmat(qw: float, qx: float, qy: float, qz: float) -> torch.Tensor:
    """Hamilton unit quaternion (COLMAP's order, w first) -> [3, 3]."""
    q = torch.tensor([qw, qx, qy, qz], dtype=torch.float64)
    w, x, y, z = (q / q.norm()).tolist()
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=torch.float64)


def _lines(path: Path):
    """(line number, stripped text) of a text file; comments dropped, blank lines kept (images.txt
    has an empty POINTS2D line for images without points)."""
    if not path.is_file():
        raise FileNotFoundError(f"COLMAP file not found: {path}")
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.lstrip().startswith("#"):
            yield no, line.strip()


def _floats(tokens: list[str], where: str) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{where}: expected numbers, got {' '.join(tokens)!r}") from None


def _camera_intrinsics(model: str, width: float, height: float, params: list[float], where: str) -> dict:
    """One COLMAP camera (model name, size, parameters) -> intrinsics dict; distortion warned and dropped."""
    if model not in COLMAP_MODELS:
        raise ValueError(f"{where}: camera model {model!r} is not supported (supported: {', '.join(COLMAP_MODELS)}); "
                         f"undistort the images first with `colmap image_undistorter`")
    names = COLMAP_MODELS[model]
    if len(params) != len(names):
        raise ValueError(f"{where}: {model} needs {len(names)} parameters ({' '.join(names)}), got {len(params)}")
    p = dict(zip(names, params))
    distortion = {k: v for k, v in p.items() if k in DISTORTION_KEYS and v != 0}
    if distortion:
        warnings.warn(f"{where}: {model} distortion {distortion} is ignored (pinhole model); "
                      f"undistort the images for exact geometry", stacklevel=4)
    fx, fy = p.get("fx", p.get("f")), p.get("fy", p.get("f"))
    return {"fx": fx, "fy": fy, "cx": p["cx"], "cy": p["cy"], "w": width, "h": height}


def _colmap_cameras(path: Path) -> dict[int, dict]:
    """cameras.txt: CAMERA_ID MODEL WIDTH HEIGHT PARAMS[] -> {id: intrinsics dict}."""
    cams = {}
    for no, line in _lines(path):
        if not line:
            continue
        tok, where = line.split(), f"{path} line {no}"
        if len(tok) < 4:
            raise ValueError(f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line!r}")
        values = _floats(tok[2:], where)
        cams[int(tok[0])] = _camera_intrinsics(tok[1], values[0], values[1], values[2:], where)
    return cams


def _points_line(line: str) -> bool:
    """Whether an images.txt line is a POINTS2D line (empty, or X Y POINT3D_ID triples)."""
    tok = line.split()
    if len(tok) % 3:
        return False
    try:
        [float(t) for t in tok]
    except ValueError:
        return False
    return True


class _Binary:
    """Little-endian reads from a COLMAP binary file; a short file is an error naming it and the item."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"COLMAP file not found: {path}")
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def read(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated at byte {self.pos} of {len(self.data)}, reading {what}")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated at byte {self.pos}, reading {what} (no terminating NUL)")
        text, self.pos = self.data[self.pos:end].decode("utf-8", errors="replace"), end + 1
        return text

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{self.path}: {len(self.data) - self.pos} bytes left after the last entry "
                             f"(not a COLMAP binary model, or a damaged one)")


def _colmap_cameras_bin(path: Path) -> dict[int, dict]:
    """cameras.bin: uint64 count, then per camera int32 id, int32 model id, uint64 width, height,
    float64 params[count of the model] (COLMAP's reconstruction_io.cc)."""
    f, cams = _Binary(path), {}
    (count,) = f.read("Q", "the camera count")
    for i in range(count):
        cam_id, model_id, width, height = f.read("iiQQ", f"camera {i}")
        where = f"{path} camera {i} (CAMERA_ID {cam_id})"
        if model_id not in COLMAP_MODEL_IDS:
            raise ValueError(f"{where}: unknown camera model id {model_id} (COLMAP knows 0-{len(COLMAP_MODEL_IDS) - 1})")
        model, n = COLMAP_MODEL_IDS[model_id]
        params = list(f.read(f"{n}d", f"the {n} parameters of {where}"))
        cams[cam_id] = _camera_intrinsics(model, float(width), float(height), params, where)
    f.done()
    return cams


def _colmap_images_bin(path: Path, cams: dict[int, dict], folder: Path) -> list[RawCamera]:
    """images.bin: uint64 count, then per image int32 id, float64 qw qx qy qz tx ty tz, int32 camera id,
    NUL-terminated name, uint64 point count, that many (float64 x, float64 y, int64 point id)."""
    f, raws = _Binary(path), []
    (count,) = f.read("Q", "the image count")
    for i in range(count):
        image_id, *pose, cam_id = f.read("i7di", f"image {i}")
        name = f.name(f"the name of image {i}")
        (points,) = f.read("Q", f"the point count of image {i}")
        f.read(f"{3 * points}d", f"the {points} points of image {i}") if points else None
        if cam_id not in cams:
            raise ValueError(f"{path} image {i} ({name}): CAMERA_ID {cam_id} is not in {folder / 'cameras.bin'}")
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3], w2c[:3, 3] = _quat_to_rotmat(*pose[:4]), torch.tensor(pose[4:], dtype=torch.float64)
        raws.append(RawCamera(name, w2c, "w2c", dict(cams[cam_id]), f"{path.name} image {i} (IMAGE_ID {image_id})"))
    f.done()
    return raws


def _images_base(folder: Path) -> Path:
    # COLMAP's layout: images/ beside sparse/0 (or the model folder); names are relative to it.
    return next((d for d in (folder / "images", folder.parent / "images", folder.parent.parent / "images")
                 if d.is_dir()), folder)


def read_colmap(folder: Path) -> CameraFile:
    """A COLMAP model folder: the text form (cameras.txt, images.txt) where it is there, else the
    binary form COLMAP writes by default (cameras.bin, images.bin). Frames sorted by image name, names
    relative to the first `images` folder found in, beside or two levels above the model folder."""
    if not (folder / "cameras.txt").is_file() and not (folder / "images.txt").is_file():
        raws = _colmap_images_bin(folder / "images.bin", _colmap_cameras_bin(folder / "cameras.bin"), folder)
        raws.sort(key=lambda r: r.name)
        return CameraFile(raws, folder / "images.bin", "colmap", "opencv", _images_base(folder))
    cams = _colmap_cameras(folder / "cameras.txt")
    path, raws = folder / "images.txt", []
    lines = list(_lines(path))
    i = 0
    while i < len(lines):
        no, line = lines[i]
        i += 1
        if not line:
            continue
        tok, where = line.split(), f"{path} line {no}"
        if len(tok) < 10:
            raise ValueError(f"{where}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got {line!r}")
        q, t = _floats(tok[1:5], where), _floats(tok[5:8], where)
        cam_id = int(_floats(tok[8:9], where)[0])
        if cam_id not in cams:
            raise ValueError(f"{where}: CAMERA_ID {cam_id} is not in {folder / 'cameras.txt'}")
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3], w2c[:3, 3] = _quat_to_rotmat(*q), torch.tensor(t, dtype=torch.float64)
        raws.append(RawCamera(" ".join(tok[9:]), w2c, "w2c", dict(cams[cam_id]), f"{path.name} line {no}"))
        if i < len(lines) and _points_line(lines[i][1]):
            i += 1  # the POINTS2D line that follows every image line
    raws.sort(key=lambda r: r.name)
    return CameraFile(raws, path, "colmap", "opencv", _images_base(folder))


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"camera file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise ValueError(f"{path}: expected an object with a non-empty 'frames' list")
    for i, frame in enumerate(data["frames"]):
        if not isinstance(frame, dict):
            raise ValueError(f"{path}: frames[{i}] must be an object, got {type(frame).__name__}")
    return data


def _intrinsics(top: dict, frame: dict, where: str) -> dict:
    """Intrinsics keys of a JSON frame, falling back to the top level (nerfstudio / plain names)."""
    merged, out = {**top, **frame}, {}
    if "fxfycxcy" in merged or "K" in merged:
        key = "fxfycxcy" if "fxfycxcy" in merged else "K"
        k = torch.tensor(merged[key], dtype=torch.float64)
        if tuple(k.shape) not in ((4,), (3, 3)):
            raise ValueError(f"{where}: '{key}' must be [fx, fy, cx, cy] or 3x3, got shape {list(k.shape)}")
        out = dict(zip(("fx", "fy", "cx", "cy"), (k if k.ndim == 1 else k[[0, 1, 0, 1], [0, 1, 2, 2]]).tolist()))
    names = {"fl_x": "fx", "fl_y": "fy", "cx": "cx", "cy": "cy", "camera_angle_x": "angle_x",
             "camera_angle_y": "angle_y", "w": "w", "h": "h", "width": "w", "height": "h"}
    out.update({ours: float(merged[theirs]) for theirs, ours in names.items() if theirs in merged})
    distortion = {k: merged[k] for k in DISTORTION_KEYS if merged.get(k)}
    if str(merged.get("camera_model", "OPENCV")).upper() not in ("OPENCV", "PINHOLE"):
        raise ValueError(f"{where}: camera_model {merged['camera_model']!r} is not supported (pinhole only)")
    if distortion:
        warnings.warn(f"{where}: distortion {distortion} is ignored (pinhole model)", stacklevel=4)
    return out


def read_json_cameras(path: Path) -> CameraFile:
    """transforms.json (frames with transform_matrix) or plain JSON; file order is kept."""
    data = _load_json(path)
    is_transforms = any("transform_matrix" in f for f in data["frames"])
    top = {k: v for k, v in data.items() if k != "frames"}
    raws = []
    for i, frame in enumerate(data["frames"]):
        where = f"{path} frames[{i}]"
        name = next((frame[k] for k in ("image", "image_path", "file_path") if k in frame), None)
        keys = [k for k in ("transform_matrix", "c2w", "w2c", "pose") if k in frame]
        if len(keys) != 1:
            raise ValueError(f"{where}: needs exactly one of 'c2w', 'w2c', 'pose' (or 'transform_matrix'), "
                             f"got {keys or 'none'}")
        pose = {"transform_matrix": "c2w", "c2w": "c2w", "w2c": "w2c", "pose": None}[keys[0]]
        raws.append(RawCamera(str(name) if name is not None else f"frame_{i}", _matrix(frame[keys[0]], where),
                              pose, _intrinsics(top, frame, where), f"frames[{i}]"))
    kind = "transforms" if is_transforms else "json"
    return CameraFile(raws, path, kind, "opengl" if is_transforms else "opencv", path.parent)


COLMAP_FILES = ("cameras.txt", "images.txt", "cameras.bin", "images.bin", "points3D.bin", "points3D.txt")


def read_camera_file(path, fmt: str = "auto") -> CameraFile:
    """COLMAP folder (or one of its files; text or binary), transforms.json or plain JSON."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if path.is_dir():
        if any((path / name).is_file() for name in COLMAP_FILES[:4]):
            return read_colmap(path)
        if (path / "transforms.json").is_file():
            return read_json_cameras(path / "transforms.json")
        if (path / "sparse" / "0").is_dir():
            return read_colmap(path / "sparse" / "0")  # COLMAP's project layout: the first model
        raise FileNotFoundError(f"{path}: holds no COLMAP model (cameras.txt/images.txt or cameras.bin/images.bin) "
                                "nor transforms.json")
    if fmt == "colmap" or path.name in COLMAP_FILES:
        return read_colmap(path.parent)
    cams = read_json_cameras(path)
    if fmt != "auto" and cams.kind != fmt:
        which = "a frame has" if cams.kind == "transforms" else "no frame has"
        raise ValueError(f"{path}: reads as {cams.kind} ({which} 'transform_matrix'), "
                         f"but --format {fmt} was asked")
    return cams


# ----------------------------------------------------------------------------- conventions
def to_c2w(cams: CameraFile, convention: str | None = None, pose: str | None = None) -> tuple[torch.Tensor, str]:
    """c2w [n, 4, 4] (OpenCV axes) of a camera file, with the format's conventions or the given
    ones. Returns it and the pose reading used. Each camera is checked, errors name its item."""
    convention = convention or cams.convention
    if convention not in CONVENTIONS or (pose is not None and pose not in POSES):
        raise ValueError(f"convention must be one of {CONVENTIONS} and pose one of {POSES}, "
                         f"got {convention!r}, {pose!r}")
    out, used = [], []
    for cam in cams.cameras:
        read_as = pose or cam.pose
        if read_as is None:
            raise ValueError(f"{cams.source} {cam.item}: 'pose' does not say whether it is c2w or w2c; "
                             f"pass --pose c2w or --pose w2c")
        check_poses(cam.matrix, name=f"{cams.source} {cam.item} ({cam.name}) pose")
        c2w = cam.matrix if read_as == "c2w" else invert_pose(cam.matrix)
        out.append(opengl_to_opencv(c2w) if convention == "opengl" else c2w)
        used.append(read_as)
    overridden = [c.item for c in cams.cameras if pose and c.pose and c.pose != pose]
    if overridden:
        warnings.warn(f"{cams.source}: {len(overridden)} poses stored as {_flip_pose(pose)} are read as {pose} "
                      f"(--pose), from {overridden[0]}", stacklevel=2)
    return torch.stack(out), used[0]


def _flip_pose(pose: str) -> str:
    return "w2c" if pose == "c2w" else "c2w"


def resolve_intrinsics(intr: dict, size: tuple[int, int], where: str) -> torch.Tensor:
    """fxfycxcy [4] in pixels of an image of `size` (w, h) from a camera's intrinsics dict."""
    w, h = size
    w0, h0 = intr.get("w", w), intr.get("h", h)
    if "fx" not in intr and "angle_x" not in intr:
        raise ValueError(f"{where}: no focal length (fxfycxcy, K, fl_x or camera_angle_x)")
    fx = intr["fx"] if "fx" in intr else 0.5 * w0 / math.tan(0.5 * intr["angle_x"])
    fy = intr.get("fy", 0.5 * h0 / math.tan(0.5 * intr["angle_y"]) if "angle_y" in intr else fx)
    k = torch.tensor([fx, fy, intr.get("cx", w0 / 2), intr.get("cy", h0 / 2)], dtype=torch.float64)
    if (w0, h0) != (w, h):
        if abs(w0 / h0 - w / h) > ASPECT_TOL * (w / h):
            raise ValueError(f"{where}: intrinsics are for a {w0:g}x{h0:g} image but the file is {w}x{h} "
                             f"(another aspect ratio)")
        warnings.warn(f"{where}: intrinsics for {w0:g}x{h0:g} rescaled to the {w}x{h} image file", stacklevel=2)
        k = k * torch.tensor([w / w0, h / h0, w / w0, h / h0], dtype=torch.float64)
    check_intrinsics(k, name=f"{where} intrinsics")
    return k


# ----------------------------------------------------------------------------- images
def _find_image(base: Path, name: str) -> Path | None:
    path = Path(name) if Path(name).is_absolute() else base / name
    if path.is_file():
        return path
    if not path.suffix:  # Blender / instant-ngp file_path without extension
        return next((path.with_suffix(e) for e in IMAGE_EXTS if path.with_suffix(e).is_file()), None)
    return None


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(w, h) of an image file, or ValueError naming it. Warns on an EXIF rotation: pixels are
    used as stored, so cameras solved on upright (rotated) copies would not fit them."""
    try:
        with Image.open(path) as img:
            if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                warnings.warn(f"{path}: EXIF orientation {img.getexif()[EXIF_ORIENTATION]} is ignored "
                              f"(pixels used as stored)", stacklevel=3)
            return img.size
    except IMAGE_ERRORS as err:
        raise ValueError(f"{path} ({where}): cannot be opened as an image ({type(err).__name__}: {err})") from None


def attach_images(cams: CameraFile, images: Path | None, allow_extra: bool) -> list[Path]:
    """The image file of every camera; errors name the camera file, the counts and the images
    missing or without a camera (the latter a warning with allow_extra)."""
    base = Path(images) if images is not None else cams.base
    paths = [_find_image(base, c.name) for c in cams.cameras]
    missing = [c.name for c, p in zip(cams.cameras, paths) if p is None]
    if missing:
        raise FileNotFoundError(f"{cams.source}: {len(missing)} of {len(paths)} cameras name images not found "
                                f"under {base}: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else "")
                                + ("" if images is not None else " (pass --images with their folder)"))
    seen, dupes = set(), []
    for p in paths:
        if p.resolve() in seen:
            dupes.append(p.name)
        seen.add(p.resolve())
    if dupes:
        raise ValueError(f"{cams.source}: several cameras for the same image: {', '.join(dupes[:10])}")
    folders = sorted({p.parent.resolve() for p in paths})
    on_disk = [f for d in folders for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    extra = [f.name for f in on_disk if f.resolve() not in seen]
    if extra:
        msg = (f"{cams.source}: {len(paths)} cameras for {len(on_disk)} images in "
               f"{', '.join(map(str, folders))}; images without a camera: {', '.join(extra[:10])}"
               + (" ..." if len(extra) > 10 else ""))
        if not allow_extra:
            raise ValueError(msg + " (pass --ignore_extra_images to render anyway)")
        warnings.warn(msg, stacklevel=2)
    return paths


def read_cameras(path, images=None, fmt: str = "auto", convention: str | None = None, pose: str | None = None,
                 allow_extra_images: bool = False) -> PosedImages:
    """Posed images from a camera file and its images (relative to `images`, else to the camera
    file's folder). Every image must open; every camera must be rigid with positive focal lengths."""
    cams = read_camera_file(path, fmt)
    c2w, used = to_c2w(cams, convention, pose)
    paths = attach_images(cams, images, allow_extra_images)
    sizes = [image_size(p, f"{cams.source} {c.item}") for c, p in zip(cams.cameras, paths)]
    k = torch.stack([resolve_intrinsics(c.intrinsics, s, f"{cams.source} {c.item} ({c.name})")
                     for c, s in zip(cams.cameras, sizes)])
    return PosedImages([c.name for c in cams.cameras], paths, sizes, c2w, k, cams.source,
                       convention or cams.convention, used)


def read_target_cameras(path, size: tuple[int, int], fmt: str = "auto", convention: str | None = None,
                        pose: str | None = None) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Cameras without images (JSON formats): c2w [n, 4, 4], fxfycxcy [n, 4] and the (w, h) each one's
    intrinsics are for (its "w"/"h" or "width"/"height", else `size`, the input images' size)."""
    cams = read_camera_file(path, fmt)
    c2w, _ = to_c2w(cams, convention, pose)
    sizes = [(int(c.intrinsics.get("w", size[0])), int(c.intrinsics.get("h", size[1]))) for c in cams.cameras]
    k = torch.stack([resolve_intrinsics(c.intrinsics, s, f"{cams.source} {c.item}")
                     for c, s in zip(cams.cameras, sizes)])
    return c2w, k, sizes
