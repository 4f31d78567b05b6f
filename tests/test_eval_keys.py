"""inference.resize and inference.render_video_config mean what they mean in the reference
(Efficient-LVSM utils/metric_utils.py resize_image; render_video with utils/camera_utils.py):
the reference's formulas are re-derived here."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation, Slerp

import evaluation.protocol as eval_protocol
from configs.schema import config_from_dict
from evaluation.protocol import check_video_config
from evaluation.scenes import resize_record
from inference import main
from tests.conftest import random_views
from tests.test_inference import args, setup  # noqa: F401 (the module's generated scenes and checkpoint)
from utils.config import ConfigError
from utils.video import nearest_neighbour_order, reference_video_cameras


def bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with align_corners=False, written out: output pixel i samples the input at
    (i + 0.5) * in / out - 0.5, clamped below at 0; neighbours floor and floor + 1 (clamped)."""
    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, wy = taps(image.shape[-2], out_h)
    x0, x1, wx = taps(image.shape[-1], out_w)
    rows = image[..., y0, :] * (1 - wy)[:, None] + image[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


@pytest.mark.parametrize("hw", [(32, 32), (300, 420), (256, 456)])
def test_resize_is_bilinear_to_256(hw):
    g = torch.Generator().manual_seed(0)
    record = {k: torch.rand(2, 3, *hw, generator=g) for k in ("inputs", "targets", "render")}
    record.update(scene="s", c2w=torch.eye(4).repeat(4, 1, 1))
    out = resize_record(record)
    for k in ("inputs", "targets", "render"):
        assert out[k].shape == (2, 3, 256, 256)
        assert np.abs(out[k].numpy() - bilinear(record[k].double().numpy(), 256, 256)).max() < 1e-5
    assert out["c2w"] is record["c2w"] and out["scene"] == "s"


def reference_order(poses: torch.Tensor) -> torch.Tensor:
    """camera_utils.get_ordered_poses_and_k on poses [n, 3, 4], step by step."""
    n = len(poses)
    ordered = poses[:1]
    poses = poses[1:]
    for _ in range(n - 1):
        distances = torch.norm(ordered[-1][:, 3] - poses[:, :, 3], dim=1)
        idx = torch.argmin(distances)
        ordered = torch.cat((ordered, poses[idx][None]), dim=0)
        poses = torch.cat((poses[0:idx], poses[idx + 1:]), dim=0)
    return ordered


def test_order_poses_is_the_reference_greedy_nearest_order():
    _, c2w, _ = random_views(1, 7, seed=3)
    c2w = c2w[0]
    c2w[4, :3, 3] = c2w[2, :3, 3]  # a tie: the earlier camera goes first
    looped = torch.cat([c2w, c2w[:1]])  # loop_video appends camera 0 before ordering
    for poses in (c2w, looped):
        order = nearest_neighbour_order(poses[:, :3, 3])
        assert sorted(order) == list(range(len(poses)))
        assert torch.equal(poses[order, :3, :4], reference_order(poses[:, :3, :4]))
    assert nearest_neighbour_order(looped[:, :3, 3])[1] == 7  # the copy of camera 0 is nearest to it


@pytest.mark.parametrize("v_in", [1, 2, 3, 4])
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("num_frames", [1, 2, 5])
def test_frame_count_is_per_transition(v_in, loop, num_frames):
    _, c2w, k = random_views(1, v_in, seed=v_in)
    if v_in + loop < 2:
        with pytest.raises(ValueError, match="needs two"):
            reference_video_cameras(c2w[0], k[0], num_frames, loop, False)
        return
    out_c2w, out_k = reference_video_cameras(c2w[0], k[0], num_frames, loop, False)
    # get_interpolated_poses_many: (number of poses - 1) transitions of steps_per_transition frames
    assert out_c2w.shape == ((v_in + loop - 1) * num_frames, 4, 4) and out_k.shape == (len(out_c2w), 4)


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("order", [False, True])
def test_path_is_the_reference_interpolation(loop, order):
    _, c2w, k = random_views(1, 3, seed=5)
    c2w, k = c2w[0].double(), k[0].double()
    k = k * torch.tensor([[1.0], [1.2], [0.9]])  # different intrinsics per camera
    n = 5
    out_c2w, out_k = reference_video_cameras(c2w, k, n, loop, order)
    poses, ks = (torch.cat([c2w, c2w[:1]]), torch.cat([k, k[:1]])) if loop else (c2w, k)
    if order:
        ordered = reference_order(poses[:, :3, :4])
        idx = [int((ordered[j, :, 3] - poses[:, :3, 3]).norm(dim=-1).argmin()) for j in range(len(poses))]
        poses, ks = poses[idx], ks[idx]
    ts = np.linspace(0, 1, n)
    for seg in range(len(poses) - 1):
        a, b = poses[seg], poses[seg + 1]
        slerp = Slerp([0, 1], Rotation.from_matrix(torch.stack([a[:3, :3], b[:3, :3]]).numpy()))
        for j, t in enumerate(ts):
            f = seg * n + j
            assert np.allclose(out_c2w[f, :3, :3].numpy(), slerp([t]).as_matrix()[0], atol=1e-6)
            assert torch.allclose(out_c2w[f, :3, 3], (1 - t) * a[:3, 3] + t * b[:3, 3], atol=1e-9)
            assert torch.allclose(out_k[f], ks[seg] * (1 - t) + ks[seg + 1] * t, atol=1e-9)
            assert torch.equal(out_c2w[f, 3], torch.tensor([0, 0, 0, 1.0], dtype=out_c2w.dtype))


def _cfg(**video):
    rv = {"traj_type": "interpolate", "num_frames": 4, "loop_video": True, "order_poses": False, **video}
    return config_from_dict({"inference": {"render_video": True, "render_video_config": rv}})


def test_video_keys_we_cannot_honour_are_errors():
    check_video_config(_cfg())
    check_video_config(_cfg(traj_type="spiral"))
    with pytest.raises(ConfigError, match="render_video_config.traj_type='circle'"):
        check_video_config(_cfg(traj_type="circle"))
    with pytest.raises(ConfigError, match="render_video_config.order_poses"):
        check_video_config(_cfg(traj_type="spiral", order_poses=True))
    with pytest.raises(ConfigError, match="render_video_config.num_frames=0"):
        check_video_config(_cfg(num_frames=0))
    cfg = config_from_dict({"training": {"num_input_views": 1},
                            "inference": {"render_video": True, "render_video_config": {"loop_video": False}}})
    with pytest.raises(ConfigError, match="render_video_config.loop_video=false"):
        check_video_config(cfg)


def test_evaluation_resizes_scores_and_images_not_videos(setup, tmp_path, monkeypatch):  # noqa: F811
    written = []
    real = eval_protocol.write_video
    monkeypatch.setattr(eval_protocol, "write_video", lambda frames, *a, **kw: written.append(frames) or
                        real(frames, *a, **kw))
    summary = main(args(setup, tmp_path, "inference.resize=true", "inference.render_video=true",
                        "inference.render_video_config.num_frames=3", "inference.generate_website=false"))
    assert summary["scored_size"].startswith("256x256") and summary["images"] == 6
    rows = json.loads((tmp_path / "per_image.json").read_text())
    assert all(math.isfinite(r["psnr"]) for r in rows)
    with Image.open(next((tmp_path / "images").rglob("render_0.png"))) as im:
        assert im.size == (256, 256)
    # 2 input views + the loop's copy of the first: 2 transitions of 3 frames, at the rendered 32 px
    assert len(written) == 2 and all(f.shape == (6, 3, 32, 32) for f in written)
    assert not (tmp_path / "index.html").exists()
