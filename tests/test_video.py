"""Trajectory videos: shapes, the cached render equals the full call, files read back frame for frame."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import utils.video as video
from model import build_model
from model.render import render_trajectory
from tests.conftest import random_views, tiny_config
from utils.video import to_uint8, trajectory_cameras, write_video

FRAMES = 5


@pytest.fixture(scope="module", params=["efficient_lvsm", "lvsm_decoder_only"])
def model(request):
    torch.manual_seed(0)
    return build_model(tiny_config(request.param).model).eval()


@pytest.fixture(scope="module")
def scene():
    images, c2w, fx = random_views(1, 3, 32, 32, seed=1)
    return images[0], c2w[0], fx[0]  # one scene: [v_in, ...]


def _distinct_frames(f: int = FRAMES, h: int = 32, w: int = 32) -> torch.Tensor:
    """[f, 3, h, w] smooth frames that differ from one another (PIL merges identical consecutive GIF
    frames into one) and have few enough colours for a GIF palette to keep them close."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    k = torch.arange(f, dtype=torch.float32)[:, None, None]
    return torch.stack([(x + 0.1 * k) % 1, y.expand(f, h, w), (x + y) / 2 + 0 * k], dim=1)


def _gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]


@pytest.mark.parametrize("traj_type", ["interpolate", "spiral"])
def test_render_trajectory_shapes(model, scene, traj_type):
    frames = render_trajectory(model, *scene, FRAMES, traj_type=traj_type, batch=2)
    assert frames.shape == (FRAMES, 3, 32, 32) and frames.dtype == torch.float32
    assert frames.isfinite().all() and 0 <= frames.min() and frames.max() <= 1


@pytest.mark.parametrize("traj_type", ["interpolate", "spiral"])
def test_chunked_render_equals_one_full_call(model, scene, traj_type):
    # Efficient-LVSM renders the chunks from one cache; LVSM re-runs the full model per chunk.
    images, c2w, fx = scene
    tc2w, tk = trajectory_cameras(c2w, fx, FRAMES, traj_type, loop=True)
    with torch.no_grad():
        full = model(images[None], c2w[None], fx[None], tc2w[None], tk[None])[0]  # [FRAMES, 3, h, w]
    frames = render_trajectory(model, images, c2w, fx, FRAMES, traj_type=traj_type, batch=2)
    assert (frames - full).abs().max() < 1e-5


def test_efficient_lvsm_encodes_once(scene, monkeypatch):
    model = build_model(tiny_config("efficient_lvsm").model).eval()
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    render_trajectory(model, *scene, FRAMES, batch=2)  # 3 chunks
    assert len(calls) == 1


def test_render_trajectory_rejects_bad_inputs(scene):
    model = build_model(tiny_config("efficient_lvsm").model).eval()
    images, c2w, fx = scene
    with pytest.raises(ValueError, match="traj_type='circle'"):
        render_trajectory(model, images, c2w, fx, FRAMES, traj_type="circle")
    with pytest.raises(ValueError, match="one scene"):
        render_trajectory(model, images[None], c2w, fx, FRAMES)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        render_trajectory(model, images, c2w, fx, FRAMES, batch=0)


def test_to_uint8_clamps_and_rounds():
    frames = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5]).view(5, 1, 1, 1).expand(5, 3, 1, 2)
    out = to_uint8(frames)
    assert out.shape == (5, 1, 2, 3) and out.dtype == np.uint8
    assert out[:, 0, 0, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.skipif(video.ffmpeg_unavailable_reason() is not None, reason="no ffmpeg backend for imageio")
def test_write_mp4_reads_back(tmp_path):
    import imageio.v2 as imageio

    frames = _distinct_frames()
    path = write_video(frames, tmp_path / "scene.mp4", fps=10)
    assert path == tmp_path / "scene.mp4" and path.stat().st_size > 0
    back = imageio.mimread(path)
    assert len(back) == FRAMES and back[0].shape == (32, 32, 3)
    # h264 with 4:2:0 chroma is lossy: close to the input, not equal (measured mean error about 6).
    assert np.abs(np.stack(back).astype(int) - to_uint8(frames).astype(int)).mean() < 12


def test_gif_fallback_when_asked_or_without_ffmpeg(tmp_path, monkeypatch):
    frames = _distinct_frames()
    asked = write_video(frames, tmp_path / "a.mp4", mp4=False)
    monkeypatch.setattr(video, "ffmpeg_unavailable_reason", lambda: "ImportError: no imageio_ffmpeg")
    forced = write_video(frames, tmp_path / "sub" / "b.mp4")
    for path in (asked, forced):
        assert path.suffix == ".gif" and path.exists() and not path.with_suffix(".mp4").exists()
        back = _gif_frames(path)
        assert len(back) == FRAMES and back[0].shape == (32, 32, 3)
        # GIF keeps at most 256 colours per frame: close to, not equal to, the input.
        assert np.abs(back[2].astype(int) - to_uint8(frames)[2].astype(int)).mean() < 4


def test_rendered_video_end_to_end(model, scene, tmp_path):
    frames = render_trajectory(model, *scene, FRAMES, batch=4)
    path = write_video(frames, tmp_path / "scene.mp4", mp4=False)
    assert len(_gif_frames(path)) == FRAMES


def test_write_video_rejects_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="must end in .mp4 or .gif"):
        write_video(_distinct_frames(), tmp_path / "scene.avi")
