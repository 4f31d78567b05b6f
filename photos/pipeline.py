"""Render a checkpoint on the user's own photos: choose views, prepare them as training does, check
the cameras, render, write. scripts/render_photos.py is its command line.

    summary = render_photos(PhotoOptions(checkpoint="ckpt.pt", cameras="sparse/0", out="out", targets="3,7"))

Images are resized to the training height (width rounded to the patch size), optionally centre
cropped (data.dataset_scene.load_view); poses are normalized with normalize_scene_poses over the
inputs and one set of targets together (posed targets, target cameras, video: one set each), as
training normalizes each sample. Output folder: inputs/ (what the model saw), cameras.png (epipolar
sanity picture, photos.camera_check), targets/ (render and ground truth), target_cameras/, video/
(PNG frames, and video.mp4, or .gif where no mp4 encoder is installed), summary.json (PSNR,
cameras, warnings). Before rendering, the cameras are checked against their layout and against the
photos themselves (points matched between inputs must fit the epipolar geometry): a reading of the
camera file that fits clearly better is an error naming the --convention / --pose to pass. Every
file is written whole (temporary file, then rename) before the next is started.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.camera_io import PosedImages, read_cameras, read_target_cameras
from data.dataset_scene import load_view, prepare_intrinsics, prepared_size
from data.scene_format import IMAGE_ERRORS, write_text_atomic
from evaluation.checkpoint import load_model
from model.render import render_scene
from photos.camera_check import (better_reading, camera_picture, centres_coincide, convention_fit, layout_problems,
                                 readings)
from utils.gallery import safe_name, save_png
from utils.geometry import normalize_scene_poses
from utils.metrics import psnr
from utils.precision import autocast
from utils.video import trajectory_cameras
from utils.video import write_video as video_file

VIDEO_KINDS = ("interpolate", "spiral")
_OTHER = {"opencv": "opengl", "opengl": "opencv", "c2w": "w2c", "w2c": "c2w"}


@dataclass
class PhotoOptions:
    checkpoint: str
    cameras: str  # COLMAP folder, transforms.json or plain JSON (data.camera_io)
    out: str
    images: str | None = None  # folder the camera file's image names are relative to
    format: str = "auto"
    convention: str | None = None  # camera axes; default: the format's
    pose: str | None = None  # "c2w" | "w2c"; default: the format's
    config: str | None = None  # default: the checkpoint's "config"
    inputs: str | None = None  # "0,2,img.png"; default: every posed image not a target
    num_inputs: int | None = None  # keep the first N of the default inputs
    targets: str | None = None  # posed images held out and rendered, with PSNR
    target_cameras: str | None = None  # JSON of cameras to render (no images)
    video: str | None = None  # "interpolate" | "spiral"
    frames: int = 60
    image_size: int | None = None  # default: the checkpoint's
    square_crop: bool | None = None  # default: the checkpoint's training.square_crop
    device: str | None = None
    chunk: int = 8  # target views per forward
    ignore_extra_images: bool = False
    ignore_camera_check: bool = False


@dataclass
class Prepared:
    """The chosen inputs as the model sees them."""
    images: torch.Tensor  # [v_in, 3, h, w]
    c2w: torch.Tensor  # [v_in, 4, 4] as read (not normalized)
    fxfycxcy: torch.Tensor  # [v_in, 4] pixels of the prepared images
    names: list[str]


# ----------------------------------------------------------------------------- choosing views
def parse_views(spec: str, names: list[str], what: str) -> list[int]:
    """'0,3,img.png' -> indices into names; a name matches the full name, the file name or its stem."""
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item.lstrip("-").isdigit():
            i = int(item)
            if not 0 <= i < len(names):
                raise ValueError(f"{what}: index {i} is out of range (0..{len(names) - 1})")
        else:
            hits = [j for j, n in enumerate(names) if item in (n, Path(n).name, Path(n).stem)]
            if len(hits) != 1:
                raise ValueError(f"{what}: {item!r} names {len(hits)} images; known: {', '.join(names[:8])}"
                                 + (" ..." if len(names) > 8 else ""))
            i = hits[0]
        if i in out:
            raise ValueError(f"{what}: {item!r} is given twice")
        out.append(i)
    return out


def choose_views(names: list[str], inputs: str | None, targets: str | None, num_inputs: int | None):
    """(input indices, target indices): targets are held out of the inputs."""
    target_ids = parse_views(targets, names, "--targets") if targets else []
    if inputs:
        input_ids = parse_views(inputs, names, "--inputs")
        both = sorted(set(input_ids) & set(target_ids))
        if both:
            raise ValueError(f"--inputs and --targets share {[names[i] for i in both]}: targets are held out")
    else:
        input_ids = [i for i in range(len(names)) if i not in target_ids][:num_inputs]
    if not input_ids:
        raise ValueError(f"no input views left: {len(names)} posed images, {len(target_ids)} held out as targets")
    return input_ids, target_ids


# ----------------------------------------------------------------------------- preparing
def load_views(posed: PosedImages, ids: list[int], image_size: int, patch: int, square_crop: bool) -> Prepared:
    """Load and prepare posed images; all must come out the same size."""
    images, ks = [], []
    for i in ids:
        try:
            img, k = load_view(posed.paths[i], posed.fxfycxcy[i].tolist(), image_size, patch, square_crop)
        except IMAGE_ERRORS as err:
            raise ValueError(f"{posed.paths[i]}: cannot be read as an image ({type(err).__name__}: {err})") from None
        images.append(img)
        ks.append(k)
    shapes = {tuple(im.shape[-2:]) for im in images}
    if len(shapes) > 1:
        listing = ", ".join(f"{posed.names[i]} {posed.sizes[i][0]}x{posed.sizes[i][1]}" for i in ids)
        raise ValueError(f"{posed.source}: images of different aspect ratios prepare to different sizes "
                         f"{sorted(shapes)} ({listing}); pass --square_crop or choose views of one size")
    return Prepared(torch.stack(images), posed.c2w[ids].float(), torch.stack(ks), [posed.names[i] for i in ids])


def normalize_with(inputs: torch.Tensor, targets: torch.Tensor, factor: float):
    """normalize_scene_poses over inputs [v_in, 4, 4] and targets [v_t, 4, 4] together."""
    both = normalize_scene_poses(torch.cat([inputs, targets]).double(), factor).float()
    return both[:len(inputs)], both[len(inputs):]


def video_cameras(kind: str, c2w: torch.Tensor, fxfycxcy: torch.Tensor, frames: int):
    """A camera path from the inputs' cameras (normalized first, so the spiral's default focus
    distance fits the scene): (c2w [frames, 4, 4], fxfycxcy [frames, 4])."""
    if kind not in VIDEO_KINDS:
        raise ValueError(f"--video must be one of {VIDEO_KINDS}, got {kind!r}")
    c2w = normalize_scene_poses(c2w.double()).float()
    return trajectory_cameras(c2w, fxfycxcy, frames, kind, loop=False)


# ----------------------------------------------------------------------------- checkpoint
def trained_height(ckpt: dict, cfg) -> int:
    """The image height a checkpoint was trained at: its "image_size", else its config's."""
    trained = ckpt.get("image_size", cfg.model.image_tokenizer.image_size)
    return int(trained[0] if isinstance(trained, (list, tuple)) else trained)  # [h, w] -> h


def resolution_warnings(trained: int, trained_square: bool, image_size: int, hw: tuple[int, int],
                        sizes: list[tuple[int, int]]) -> list[str]:
    """Ways the prepared images differ from what the checkpoint was trained on."""
    out, (h, w) = [], hw
    if image_size != trained:
        out.append(f"rendering at height {image_size}, the checkpoint was trained at {trained}")
    if trained_square and w != h:
        out.append(f"the checkpoint was trained on square crops, these images are {w}x{h} (try --square_crop)")
    if not trained_square and w == h and not all(s[0] == s[1] for s in sizes):
        out.append("the checkpoint was trained on uncropped images, these are square crops")
    small = [s for s in sizes if s[1] < image_size]
    if small:
        out.append(f"{len(small)} images are smaller than {image_size} px high and are upsampled")
    return out


# ----------------------------------------------------------------------------- rendering
@torch.no_grad()
def render_views(model, inputs: Prepared, c2w: torch.Tensor, target_c2w: torch.Tensor,
                 target_k: torch.Tensor, chunk: int, device: torch.device) -> torch.Tensor:
    """Render target cameras [v_t, 4, 4], [v_t, 4] from the prepared inputs with normalized poses
    c2w [v_in, 4, 4]. Inputs are encoded once, targets rendered `chunk` at a time. -> [v_t, 3, h, w]."""
    views = [x[None].to(device) for x in (inputs.images, c2w, inputs.fxfycxcy)]  # [1, v_in, ...]
    targets = [x[None].to(device) for x in (target_c2w, target_k)]  # [1, v_t, ...]
    out = render_scene(model, *views, *targets, chunk=chunk, autocast=lambda: autocast(device, "bf16"))  # bf16 on GPU
    return out[0].clamp(0, 1).cpu()


# ----------------------------------------------------------------------------- writing
def write_json(obj, path: Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1))


def write_video(frames: torch.Tensor, folder: Path) -> str | None:
    """PNG frames [n, 3, h, w], then video.mp4 (or .gif where no mp4 encoder is installed).
    Returns the video's path, or None (the frames stay the result)."""
    for i, frame in enumerate(frames):
        save_png(frame, folder / f"frame_{i:04d}.png")
    path = folder.parent / "video.mp4"
    try:
        return str(video_file(frames, path))  # the path written: .gif where no mp4 encoder
    except (OSError, RuntimeError, ValueError) as err:  # a broken encoder: the frames suffice
        warnings.warn(f"{path}: video not written ({err}); the frames are in {folder}", stacklevel=2)
        return None


# ----------------------------------------------------------------------------- the command
@dataclass
class Renderer:
    """The prepared inputs and the model; renders one set of targets at a time, normalizing the
    inputs' and that set's poses together, and records the cameras it used."""
    inputs: Prepared
    model: torch.nn.Module
    scene_scale_factor: float
    chunk: int
    device: torch.device
    cameras: dict = field(default_factory=dict)

    def __call__(self, name: str, c2w_t: torch.Tensor, k_t: torch.Tensor) -> torch.Tensor:
        c2w_in, c2w_t = normalize_with(self.inputs.c2w, c2w_t, self.scene_scale_factor)
        self.cameras[name] = {"c2w": c2w_t.tolist(), "fxfycxcy": k_t.tolist(), "inputs_c2w": c2w_in.tolist()}
        return render_views(self.model, self.inputs, c2w_in, c2w_t, k_t, self.chunk, self.device)


def _reading_flags(posed: PosedImages, reading: tuple[str, str]) -> str:
    """The command-line flags that select `reading` (convention, pose) instead of the current one."""
    flags = [f"--convention {reading[0]}"] if reading[0] != posed.convention else []
    return " ".join(flags + ([f"--pose {reading[1]}"] if reading[1] != posed.pose else []))


def _photo_check(posed: PosedImages, inputs: Prepared, in_ids: list[int]) -> str | None:
    """The photos' own verdict (photos.camera_check.convention_fit): a message when another reading
    of the camera file fits the points matched between the input images clearly better."""
    if len(in_ids) < 2:
        return None
    fit = convention_fit(inputs.images, inputs.fxfycxcy, posed.c2w[in_ids], posed.convention, posed.pose)
    better = better_reading(fit, posed.convention, posed.pose)
    if better is None:
        return None
    px = fit.median_px
    return (f"{posed.source}: the photos fit another camera convention: {fit.matches} points matched between "
            f"the input images lie a median {px[(posed.convention, posed.pose)]:.1f} px from their epipolar lines "
            f"read with {posed.convention} axes and {posed.pose} poses, {px[better]:.1f} px with {better[0]} axes "
            f"and {better[1]} poses. Pass {_reading_flags(posed, better)}; in cameras.png the thick epipolar "
            f"lines must pass through the marked points. --ignore_camera_check renders anyway")


def _camera_check(posed: PosedImages, ids: list[int], ignore: bool, photo_msg: str | None = None) -> list[str]:
    problems = layout_problems(posed.c2w[ids])
    if photo_msg is not None:  # the photos name the reading; a layout problem is one more sign
        msg = photo_msg + (f" (the cameras also look away from each other: {'; '.join(problems)})"
                           if problems else "")
        if not ignore:
            raise ValueError(msg)
        return [msg]
    if not problems:
        return []
    # Name only the readings that give a sound layout: for a ring around an object read with flipped
    # axes that is the other axes; the other pose kind would put every camera at one point.
    others = readings(posed.c2w[ids], posed.convention, posed.pose)
    fixes = [_reading_flags(posed, r) for r, c2w in others.items() if r != (posed.convention, posed.pose)
             and not layout_problems(c2w) and not centres_coincide(c2w)]
    advice = (f"the convention is wrong: pass {' or '.join(fixes)}" if fixes else
              f"no other reading (--convention {_OTHER[posed.convention]}, --pose {_OTHER[posed.pose]}) gives a "
              f"sound layout either: check the camera file")
    msg = (f"{posed.source}: read with {posed.convention} camera axes and {posed.pose} poses, the cameras "
           f"look away from each other ({'; '.join(problems)}). Unless the photos look outwards from one spot, "
           f"{advice}; in cameras.png the thick epipolar lines must pass through the marked points. "
           f"--ignore_camera_check renders anyway")
    if not ignore:
        raise ValueError(msg)
    return [msg]


def _sanity(posed: PosedImages, inputs: Prepared, in_ids: list[int], t_ids: list[int], out: Path,
            ignore: bool) -> list[str]:
    """Write cameras.png, then check the layout (an error unless `ignore`: the picture shows it)."""
    if centres_coincide(posed.c2w[in_ids + t_ids]):
        raise ValueError(f"{posed.source}: all {len(in_ids + t_ids)} chosen cameras sit at one point, read as "
                         f"{posed.pose}: nothing to render from; if the file holds the other kind of matrix, pass "
                         f"--pose {_OTHER[posed.pose]}")
    c2w_all = normalize_scene_poses(posed.c2w[in_ids + t_ids]).float()  # the top view's frame
    save_png(camera_picture(inputs.images, c2w_all[:len(in_ids)], inputs.fxfycxcy, inputs.names,
                            c2w_all[len(in_ids):]), out / "cameras.png")
    return _camera_check(posed, in_ids + t_ids, ignore, _photo_check(posed, inputs, in_ids))


def render_photos(opt: PhotoOptions) -> dict:
    """Run the whole command; returns the summary also written to <out>/summary.json."""
    if not (opt.targets or opt.target_cameras or opt.video):
        raise ValueError("nothing to render: give --targets, --target_cameras or --video")
    posed = read_cameras(opt.cameras, opt.images, opt.format, opt.convention, opt.pose, opt.ignore_extra_images)
    device = torch.device(opt.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg, ckpt = load_model(opt.checkpoint, opt.config, device)
    trained = trained_height(ckpt, cfg)
    prep = (opt.image_size or trained, cfg.model.image_tokenizer.patch_size,
            cfg.training.square_crop if opt.square_crop is None else opt.square_crop)  # load_view's arguments
    if prep[0] % prep[1]:
        raise ValueError(f"--image_size {prep[0]} must be a multiple of the patch size {prep[1]}")
    in_ids, t_ids = choose_views(posed.names, opt.inputs, opt.targets, opt.num_inputs)
    inputs, out = load_views(posed, in_ids, *prep), Path(opt.out)
    for i, (img, name) in enumerate(zip(inputs.images, inputs.names)):
        save_png(img, out / "inputs" / f"{i:02d}_{safe_name(Path(name).stem)}.png")
    found = resolution_warnings(trained, cfg.training.square_crop, prep[0], inputs.images.shape[-2:],
                                [posed.sizes[i] for i in in_ids + t_ids])
    found += _sanity(posed, inputs, in_ids, t_ids, out, opt.ignore_camera_check)
    for msg in found:
        warnings.warn(msg, stacklevel=2)
    render = Renderer(inputs, model, cfg.training.scene_scale_factor, opt.chunk, device)
    summary = {"source": str(posed.source), "convention": posed.convention, "pose": posed.pose,
               "inputs": inputs.names, "image_size": list(inputs.images.shape[-2:]), "warnings": found}
    if t_ids:
        summary["targets"] = _posed_targets(render, posed, t_ids, prep, out)
    if opt.target_cameras:
        summary["target_cameras"] = _camera_targets(render, opt, posed.sizes[in_ids[0]], prep)
    if opt.video:
        frames = render("video", *video_cameras(opt.video, inputs.c2w, inputs.fxfycxcy, opt.frames))
        summary["video"] = {"frames": len(frames), "path": write_video(frames, out / "video")}
    summary["cameras"] = render.cameras
    write_json(summary, out / "summary.json")
    return summary


def _posed_targets(render: Renderer, posed: PosedImages, t_ids: list[int], prep: tuple, out: Path) -> list[dict]:
    """Render held-out posed images; write render and ground truth; PSNR per target."""
    gt = load_views(posed, t_ids, *prep)
    if gt.images.shape[-2:] != render.inputs.images.shape[-2:]:
        raise ValueError(f"{posed.source}: targets prepare to {tuple(gt.images.shape[-2:])}, inputs to "
                         f"{tuple(render.inputs.images.shape[-2:])}: choose targets of the inputs' aspect ratio")
    renders = render("targets", gt.c2w, gt.fxfycxcy)
    scores = psnr(renders, gt.images)
    rows = []
    for i, (name, render, truth) in enumerate(zip(gt.names, renders, gt.images)):
        stem = f"{i:02d}_{safe_name(Path(name).stem)}"
        save_png(render, out / "targets" / f"{stem}_render.png")
        save_png(truth, out / "targets" / f"{stem}_gt.png")
        rows.append({"name": name, "psnr": float(scores[i])})
    return rows


def _camera_targets(render: Renderer, opt: PhotoOptions, input_size: tuple[int, int], prep: tuple) -> int:
    """Render the cameras of --target_cameras (intrinsics for their own size, else the inputs')."""
    c2w_t, k_t, sizes = read_target_cameras(opt.target_cameras, input_size, convention=opt.convention, pose=opt.pose)
    k_t = torch.stack([prepare_intrinsics(k, s, *prep) for k, s in zip(k_t, sizes)])
    hw = tuple(render.inputs.images.shape[-2:])
    wrong = [i for i, s in enumerate(sizes) if prepared_size(s, *prep)[0][::-1] != hw]
    if wrong:
        raise ValueError(f"{opt.target_cameras}: cameras {wrong} are for images of another aspect ratio than "
                         f"the inputs ({sizes[wrong[0]][0]}x{sizes[wrong[0]][1]} vs {input_size[0]}x{input_size[1]})")
    renders = render("target_cameras", c2w_t.float(), k_t)
    for i, img in enumerate(renders):
        save_png(img, Path(opt.out) / "target_cameras" / f"{i:03d}.png")
    return len(renders)
