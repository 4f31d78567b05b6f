"""Render targets from input views with any model: the one helper every caller uses.

Every model answers `encode(images, c2w, fxfycxcy, cache=None)` and `render(cache, c2w, fxfycxcy)`
(Efficient-LVSM caches per-view keys and values; the LVSM baselines hold the views and recompute).
`render_scene` encodes the inputs once (or one view at a time: the incremental path) and renders
the targets `chunk` views at a time, all under one mixed-precision context:

    with torch.no_grad():
        images = render_scene(model, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy, chunk=8,
                              autocast=lambda: utils.precision.autocast(device, "bf16"))
"""

import contextlib
from typing import Callable, Optional

import torch

from utils.video import trajectory_cameras


def render_targets(model: torch.nn.Module, cache, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
                   chunk: Optional[int] = None) -> torch.Tensor:
    """Target cameras c2w [b, v_t, 4, 4], fxfycxcy [b, v_t, 4] rendered from `cache`, `chunk` target
    views at a time (all at once if None). Returns [b, v_t, 3, h, w] float32 on the model's device."""
    v_t = c2w.shape[1]
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    step = v_t if chunk is None else chunk
    return torch.cat([model.render(cache, c2w[:, s:s + step], fxfycxcy[:, s:s + step]).float()
                      for s in range(0, v_t, step)], dim=1)


def render_scene(model: torch.nn.Module, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
                 target_c2w: torch.Tensor, target_fxfycxcy: torch.Tensor, chunk: Optional[int] = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 one_view_at_a_time: bool = False) -> torch.Tensor:
    """Inputs images [b, v_in, 3, h, w], c2w [b, v_in, 4, 4], fxfycxcy [b, v_in, 4] -> renders
    [b, v_t, 3, h, w] (float32) of the targets, under `autocast()`. With one_view_at_a_time the
    inputs enter the cache view by view (the incremental path); the result is the same."""
    with autocast():
        if one_view_at_a_time:
            cache = None
            for i in range(images.shape[1]):
                cache = model.encode(images[:, i:i + 1], c2w[:, i:i + 1], fxfycxcy[:, i:i + 1], cache=cache)
        else:
            cache = model.encode(images, c2w, fxfycxcy)
        return render_targets(model, cache, target_c2w, target_fxfycxcy, chunk)


# ----------------------------------------------------------------------------- videos: one scene along a path

def render_trajectory(model: torch.nn.Module, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
                      num_frames: int, traj_type: str = "interpolate", loop: bool = True, batch: int = 8,
                      autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                      ) -> torch.Tensor:
    """Render one scene along `trajectory_cameras(c2w, fxfycxcy, num_frames, traj_type, loop)`
    (num_frames in all); arguments and result as `render_cameras`."""
    path_c2w, path_k = trajectory_cameras(c2w, fxfycxcy, num_frames, traj_type, loop)  # [f, 4, 4], [f, 4]
    return render_cameras(model, images, c2w, fxfycxcy, path_c2w, path_k, batch=batch, autocast=autocast)


def _check_scene(images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [v_in, 3, h, w] for one scene, got {list(images.shape)}")
    v_in = images.shape[0]
    if tuple(c2w.shape) != (v_in, 4, 4) or tuple(fxfycxcy.shape) != (v_in, 4):
        raise ValueError(f"c2w {list(c2w.shape)} and fxfycxcy {list(fxfycxcy.shape)} must be "
                         f"[{v_in}, 4, 4] and [{v_in}, 4] to match images {list(images.shape)}")


@torch.no_grad()
def render_cameras(model: torch.nn.Module, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
                   path_c2w: torch.Tensor, path_k: torch.Tensor, batch: int = 8,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                   ) -> torch.Tensor:
    """Render one scene at the cameras path_c2w [f, 4, 4], path_k [f, 4].

    images [v_in, 3, h, w] in [0, 1], c2w [v_in, 4, 4] (OpenCV), fxfycxcy [v_in, 4] in pixels, all on
    the model's device (no batch axis: one scene). Frames are rendered `batch` target views at a time
    under `autocast()`, from one `encode` of the inputs. The model should be in eval mode.
    Returns frames [f, 3, h, w], float32 on the CPU.
    """
    _check_scene(images, c2w, fxfycxcy)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    path_c2w, path_k = path_c2w.to(c2w), path_k.to(fxfycxcy)
    frames = render_scene(model, images[None], c2w[None], fxfycxcy[None], path_c2w[None], path_k[None],
                          chunk=batch, autocast=autocast)  # [1, f, 3, h, w]
    return frames[0].cpu()  # [f, 3, h, w]
