"""The pose sensitivity diagnostic computes its numbers, writes its files, and tells camera-blind,
jumpy and smooth renderers apart."""

import json
import math

import pytest
import torch
from PIL import Image

from evaluation.pose_check import local_motion, run_pose_check, sweep_cameras, sweep_stats, write_outputs
from model import build_model
from tests.conftest import random_views, tiny_config

H = W = 32


class FixedImage(torch.nn.Module):
    """Ignores every camera: the same image for every target (the reported bug)."""

    def __init__(self, image):
        super().__init__()
        self.image = image  # [3, h, w]

    def forward(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy):
        b, v_t = target_c2w.shape[:2]
        return self.image.expand(b, v_t, *self.image.shape).clone()


class CameraPattern(torch.nn.Module):
    """An image that varies continuously with the target camera's position and forward axis."""

    def forward(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy):
        h, w = images.shape[-2:]
        ramp = torch.linspace(-1, 1, w).expand(3, h, w)  # [3, h, w]
        phase = 3 * target_c2w[..., :3, 3].sum(-1) + 3 * target_c2w[..., 0, 2]  # [b, v_t]
        phase = phase[..., None, None, None]  # [b, v_t, 1, 1, 1]
        return 0.5 + 0.4 * torch.sin(2 * ramp + phase)  # [b, v_t, 3, h, w]


class StepAtShift(torch.nn.Module):
    """Grey, then brighter once the camera's world x coordinate passes a threshold: one jump."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy):
        b, v_t = target_c2w.shape[:2]
        jump = (target_c2w[..., 0, 3] > self.threshold).float()[..., None, None, None]  # [b, v_t, 1, 1, 1]
        return (0.3 + 0.4 * jump).expand(b, v_t, 3, *images.shape[-2:])


def scene(v=2):
    images, c2w, fxfycxcy = random_views(1, v, H, W, seed=4)
    return images[0], c2w[0], fxfycxcy[0]


def test_local_motion_moves_camera_along_its_own_axes():
    c2w = scene()[1][0]
    moved = sweep_cameras(c2w, "shift_x", [0.2])[0]
    assert torch.allclose(moved[:3, 3], c2w[:3, 3] + 0.2 * c2w[:3, 0], atol=1e-6)  # along the camera's right
    turned = c2w.double() @ local_motion(math.radians(30), 0.0)
    assert torch.allclose(turned[:3, 1], c2w[:3, 1].double(), atol=1e-6)  # y axis kept
    cos = (turned[:3, 2] * c2w[:3, 2].double()).sum()
    assert abs(float(cos) - math.cos(math.radians(30))) < 1e-6
    with pytest.raises(ValueError, match="sweep kind"):
        sweep_cameras(c2w, "roll", [0.1])


def test_tiny_model_numbers_and_files(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config("efficient_lvsm").model).eval()
    images, c2w, fxfycxcy = scene(2)
    report, pictures = run_pose_check(model, images, c2w, fxfycxcy, steps=2)
    paths = write_outputs(tmp_path, report, pictures)
    saved = json.loads(paths["json"].read_text())
    assert len(saved["input_cameras"]["psnr"]) == 2
    for kind in ("rotate_y", "shift_x"):
        sweep = saved["sweeps"][kind]
        assert len(sweep["offsets"]) == 5 and len(sweep["change_from_previous"]) == 4
        assert sweep["offsets"][2] == 0.0 and sweep["psnr_to_unperturbed"][2] == pytest.approx(100.0)
        assert sweep["verdict"] in ("static", "jumpy", "smooth")
        assert all(math.isfinite(x) for x in sweep["change_from_previous"])
    assert saved["sweeps"]["rotate_y"]["offsets"][-1] == pytest.approx(10.0)
    assert len(saved["verdicts"]) == 3 and isinstance(saved["ok"], bool)
    with Image.open(paths["inputs_vs_renders"]) as img:
        assert img.size == (2 * (W + 2) + 2, 3 * (H + 2) + 2)  # inputs / renders / errors
    with Image.open(paths["sweep_shift_x"]) as img:
        assert img.size == (5 * (W + 2) + 2, 2 * (H + 2) + 2)


def test_camera_blind_model_is_flagged():
    images, c2w, fxfycxcy = scene(2)
    report, _ = run_pose_check(FixedImage(torch.full((3, H, W), 0.3)), images, c2w, fxfycxcy, steps=2)
    for kind in ("rotate_y", "shift_x"):
        assert report["sweeps"][kind]["verdict"] == "static"
        assert report["sweeps"][kind]["max_change_from_unperturbed"] == 0.0
    assert not report["ok"]
    assert any("renders do not depend on the target camera" in p for p in report["problems"])
    assert report["input_cameras"]["verdict"] == "does_not_reproduce"  # random inputs vs a grey image


def test_smoothly_varying_model_is_smooth():
    images, c2w, fxfycxcy = scene(2)
    c2w[0, :3, :3] = torch.eye(3)  # the swept camera looks along +z: its yaw is the pattern's phase
    report, _ = run_pose_check(CameraPattern(), images, c2w, fxfycxcy, steps=3)
    for kind in ("rotate_y", "shift_x"):
        sweep = report["sweeps"][kind]
        assert sweep["verdict"] == "smooth", sweep
        assert sweep["max_over_median"] < 2.0
        psnr = sweep["psnr_to_unperturbed"]
        assert psnr[0] < psnr[1] < psnr[2] < psnr[3] > psnr[4] > psnr[5] > psnr[6]  # falls away from the middle
    assert all("smooth:" in m for m in report["verdicts"][1:])


def test_jump_in_the_sweep_is_flagged():
    images, c2w, fxfycxcy = scene(2)
    threshold = float(c2w[0, 0, 3] + 0.025 * c2w[0, 0, 0])  # crossed between shifts 0 and 0.05
    report, _ = run_pose_check(StepAtShift(threshold), images, c2w, fxfycxcy, steps=2, max_shift=0.1)
    sweep = report["sweeps"]["shift_x"]
    assert sweep["verdict"] == "jumpy" and sweep["largest_step"] == 2
    assert any("shift_x: not smooth" in p for p in report["problems"])


def test_sweep_stats_rejects_even_sweeps_and_reports_ratio():
    with pytest.raises(ValueError, match="odd number"):
        sweep_stats(torch.zeros(4, 3, 8, 8))
    frames = torch.linspace(0, 0.4, 5)[:, None, None, None].expand(5, 3, 8, 8)  # even steps of 0.1
    stats = sweep_stats(frames)
    assert stats["verdict"] == "smooth" and stats["max_over_median"] == pytest.approx(1.0)


def test_sweep_view_out_of_range_names_it():
    images, c2w, fxfycxcy = scene(2)
    with pytest.raises(ValueError, match="sweep_view=5"):
        run_pose_check(CameraPattern(), images, c2w, fxfycxcy, sweep_view=5)
