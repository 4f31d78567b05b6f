"""Videos of one scene along a camera path: the path's cameras and the file (mp4, or GIF); the
frames are rendered by model/render.py (`render_cameras`, `render_trajectory`).

Two meanings of a frame count: `trajectory_cameras` spreads `num_frames` in all over the path (own
photos); `reference_video_cameras` is the reference evaluation's render_video, where
`inference.render_video_config.num_frames` counts the frames of each transition between two cameras.

mp4 needs an ffmpeg backend for imageio (the imageio-ffmpeg package, which ships its own ffmpeg
binary); without one the frames are written as an animated GIF with the same stem, so a video is
always produced.
"""

from pathlib import Path

import numpy as np
import torch

from utils import images
from utils.geometry import interpolate_trajectory, spiral_trajectory

TRAJECTORIES = ("interpolate", "spiral")


def nearest_neighbour_order(centres: torch.Tensor) -> list[int]:
    """The reference's order_poses (utils/camera_utils.py get_ordered_poses_and_k): start at camera 0,
    then repeatedly take the remaining camera whose centre is nearest (Euclidean) to the last one
    taken; ties go to the earliest remaining camera (torch.argmin). centres [v, 3] -> v indices."""
    order, remaining = [0], list(range(1, centres.shape[0]))
    while remaining:
        dist = (centres[order[-1]] - centres[remaining]).norm(dim=-1)  # [len(remaining)]
        order.append(remaining.pop(int(dist.argmin())))
    return order


def reference_video_cameras(c2w: torch.Tensor, fxfycxcy: torch.Tensor, num_frames: int, loop_video: bool,
                            order_poses: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The cameras of the reference's render_video with traj_type "interpolate" (Efficient-LVSM and LVSM
    model render_video, utils/camera_utils.py get_interpolated_poses_many), from the input cameras
    c2w [v_in, 4, 4], fxfycxcy [v_in, 4]:

    1. loop_video appends camera 0 at the end (so the path returns to it);
    2. order_poses then reorders all of them by `nearest_neighbour_order` (the appended copy too);
    3. each consecutive pair is one transition of `num_frames` frames at t = linspace(0, 1, num_frames)
       (both ends included, so a junction camera appears twice): slerp rotation, linear centre and
       intrinsics.
    Returns (c2w [(v - 1) * num_frames, 4, 4], fxfycxcy [(v - 1) * num_frames, 4]), v = v_in + loop_video.
    """
    if loop_video:
        c2w, fxfycxcy = torch.cat([c2w, c2w[:1]]), torch.cat([fxfycxcy, fxfycxcy[:1]])
    if order_poses:
        order = nearest_neighbour_order(c2w[:, :3, 3])
        c2w, fxfycxcy = c2w[order], fxfycxcy[order]
    if c2w.shape[0] < 2:
        raise ValueError(f"{c2w.shape[0]} camera: an interpolated video needs two (loop_video adds the first again)")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 (frames per transition), got {num_frames}")
    parts = [interpolate_trajectory(c2w[i:i + 2], fxfycxcy[i:i + 2], num_frames) for i in range(c2w.shape[0] - 1)]
    return torch.cat([c for c, _ in parts]), torch.cat([k for _, k in parts])


def trajectory_cameras(c2w: torch.Tensor, fxfycxcy: torch.Tensor, num_frames: int, traj_type: str,
                       loop: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras of a path through the input cameras c2w [v_in, 4, 4], fxfycxcy [v_in, 4]:
    (c2w [num_frames, 4, 4], fxfycxcy [num_frames, 4]).

    "interpolate" passes through the input cameras in order (looping back to the first if loop);
    "spiral" orbits their mean camera and always loops, with the inputs' mean intrinsics."""
    if traj_type == "interpolate":
        return interpolate_trajectory(c2w, fxfycxcy, num_frames, loop=loop)
    if traj_type == "spiral":
        path = spiral_trajectory(c2w, num_frames)  # [num_frames, 4, 4]
        # All input views share one image size, so their mean intrinsics are a valid camera for it.
        return path, fxfycxcy.mean(dim=0).expand(num_frames, 4).to(path.dtype)
    raise ValueError(f"traj_type='{traj_type}' is not a known trajectory; known: {', '.join(TRAJECTORIES)}")


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """frames [f, 3, h, w] in [0, 1] -> [f, h, w, 3] uint8 (clamped, rounded)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [f, 3, h, w], got {list(frames.shape)}")
    return images.to_uint8(frames)


def ffmpeg_unavailable_reason() -> str | None:
    """None when imageio can write mp4 here, else why not."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()  # raises RuntimeError when no ffmpeg binary is found
    except (ImportError, RuntimeError, OSError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _write_mp4(arr: np.ndarray, path: Path, fps: float) -> None:
    import imageio.v2 as imageio

    # yuv420p (the pixel format players expect) needs even sizes; imageio-ffmpeg rounds odd ones up.
    imageio.mimwrite(path, list(arr), format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                     macro_block_size=2)


def _write_gif(arr: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    pil = [Image.fromarray(a) for a in arr]
    # GIF delays are in milliseconds; loop=0 repeats forever. PIL merges consecutive identical frames
    # into one longer frame, so a still scene plays the same but reads back with fewer frames.
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=max(1, round(1000 / fps)), loop=0)


def write_video(frames: torch.Tensor, path: str | Path, fps: float = 24, mp4: bool = True) -> Path:
    """Write frames [f, 3, h, w] in [0, 1] as a video; returns the path actually written.

    An mp4 at `path` (suffix .mp4) when mp4 is True and imageio has an ffmpeg backend; otherwise an
    animated GIF with the same stem (.gif), as also for a `path` ending in .gif. One line says which.
    """
    path = Path(path)
    if path.suffix not in (".mp4", ".gif"):
        raise ValueError(f"video path {path} must end in .mp4 or .gif")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    arr = to_uint8(frames)  # [f, h, w, 3]
    if len(arr) == 0:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    why_not = "a .gif path was asked for" if path.suffix == ".gif" else (
        "mp4=False" if not mp4 else ffmpeg_unavailable_reason())
    if why_not is None:
        _write_mp4(arr, path, fps)
        print(f"video: {path} (mp4, {len(arr)} frames at {fps} fps)")
        return path
    gif = path.with_suffix(".gif")
    _write_gif(arr, gif, fps)
    print(f"video: {gif} (GIF, {len(arr)} frames at {fps} fps; no mp4 because {why_not})")
    return gif
