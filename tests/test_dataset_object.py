import json

import numpy as np
import torch
from PIL import Image

from data.dataset_object import ObjectDataset
from utils.geometry import invert_pose, opencv_to_opengl, project_points


def _look_at_origin(position):
    """OpenCV c2w of a camera at `position` looking at the origin, world up = +z."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = position
    return torch.tensor(c2w)


def test_rgba_composite_and_opengl_cameras(tmp_path):
    (tmp_path / "metadata").mkdir()
    frames = []
    for i, angle in enumerate(np.linspace(0, 2 * np.pi, 6, endpoint=False)):
        rgba = np.zeros((32, 32, 4), np.uint8)
        rgba[12:20, 12:20] = [255, 0, 0, 255]  # opaque red object in the middle, transparent elsewhere
        Image.fromarray(rgba).save(tmp_path / f"{i}.png")
        c2w_cv = _look_at_origin(np.array([2 * np.cos(angle), 2 * np.sin(angle), 0.5]))
        w2c_gl = invert_pose(opencv_to_opengl(c2w_cv))  # what Blender would write
        frames.append({"image_path": f"../{i}.png", "fxfycxcy": [40, 40, 16, 16], "w2c": w2c_gl.tolist()})
    (tmp_path / "metadata" / "obj.json").write_text(json.dumps({"scene_name": "obj", "frames": frames}))
    (tmp_path / "list.txt").write_text("metadata/obj.json\n")
    ds = ObjectDataset(tmp_path / "list.txt", image_size=16, num_views=4, background=(0.0, 0.0, 1.0))
    sample = ds[0]
    assert sample["image"].shape == (4, 3, 16, 16)
    assert torch.allclose(sample["image"][:, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # background blue
    assert sample["image"][0, 0, 8, 8] > 0.9  # object red
    # after conversion the origin projects to the image centre of every view
    uv, depth = project_points(torch.zeros(1, 3).double(), sample["c2w"].double(), sample["fxfycxcy"].double())
    assert (depth > 0).all() and torch.allclose(uv, torch.full_like(uv, 8.0), atol=1e-4)
    assert len(set(sample["index"][:, 0].tolist())) == 4  # distinct views
