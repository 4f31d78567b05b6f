"""scripts/view_count_eval.py: inputs never targets, the same targets for every count; the table."""

import json

import pytest
import torch

from configs.schema import load_config
from data import synthetic
from model import build_model
from scripts.view_count_eval import input_frames, view_count_rows
from tests.conftest import ROOT


def test_input_frames():
    context, targets = [4, 20], [7, 11, 15]
    assert input_frames(context, targets, 1, 32) == [4]
    assert input_frames(context, targets, 2, 32) == [4, 20]
    for n in range(1, 30):
        frames = input_frames(context, targets, n, 32)
        assert len(set(frames)) == n and not set(frames) & set(targets)
        if n <= 14:  # 17 frames from 4 to 20, 3 of them targets
            assert min(frames) >= 4 and max(frames) <= 20
    assert input_frames([0, 4], [1, 2, 3], 3, 6) == [0, 4, 5]  # widened where there is room
    with pytest.raises(ValueError, match="fewer than 30 inputs"):
        input_frames(context, targets, 30, 32)


def test_view_count_rows(tmp_path):
    synthetic.generate(tmp_path, "rooms", 0, 2, frames=16, size=32, seed=0)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32", "model.transformer.d=32",
        "model.transformer.d_head=8", "model.transformer.n_layer=1", "training.num_target_views=3"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    test = tmp_path / "test"
    rows = view_count_rows(cfg, model, test / "full_list.txt", test / "evaluation_index.json", [1, 4, 13, 14], "tiny")
    assert [r["views"] for r in rows] == [1, 4, 13, 14]
    assert [r["targets"] for r in rows] == [6, 6, 6, 0] and rows[-1]["skipped"] == 2  # 16 frames, 3 targets
    index = json.loads((test / "evaluation_index.json").read_text())
    assert all(len(v["target"]) == 3 for v in index.values())
    assert rows[0]["psnr_nearest_view"] != rows[1]["psnr_nearest_view"]  # more inputs: a nearer view
