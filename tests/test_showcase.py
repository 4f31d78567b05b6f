"""The showcase model: its training script (a few steps here), export, the shipped file by its
released name, and continuing the shipped training state."""

import subprocess
import sys

import torch

from configs.released import RELEASED, resolve_checkpoint
from evaluation.checkpoint import load_model
from model.checkpoint import checkpoints
from scripts import train_showcase
from tests.conftest import ROOT

TINY = ["model.transformer.d=32", "model.transformer.d_head=16", "model.transformer.n_layer=1",
        "training.batch_size_per_gpu=2", "training.checkpoint_every=2", "training.eval_every=2", "training.warmup=1"]


def test_train_export_and_continue(tmp_path):
    out, dest = tmp_path / "run", tmp_path / "shipped"
    train_showcase.main(["--out", str(out), "--scenes", "4", "--test_scenes", "2", "--max_steps", "2", *TINY])
    cfg = train_showcase.config(out, TINY)
    path = train_showcase.export(cfg, dest)
    model, loaded_cfg, ckpt = load_model(path)
    assert ckpt["step"] == 2 and ckpt["train_seconds"] > 0 and "optimizer" not in ckpt
    assert ckpt["data"] == {"kind": "rooms", "num_train": 4, "num_test": 2, "frames": 32, "size": 32, "seed": 0,
                            "style": {"textures": "shared", "tile_scale": 3.0, "walk_scale": 1.0, "photo_fraction": 0.5,
                                      "laps": 0.0}}
    assert loaded_cfg.model.transformer.d == 32 and loaded_cfg.training.use_view_masking
    state = torch.load(dest / train_showcase.STATE, weights_only=True)
    assert state["step"] == 2 and "optimizer" in state
    lines = (out / "checkpoints" / "metrics.jsonl").read_text()
    assert '"eval_psnr"' in lines  # held-out PSNR from 2 inputs while training draws 2 to 6

    # A new folder continues the shipped state: it resumes at step 2, not from scratch.
    again = tmp_path / "again"
    train_showcase.continue_shipped(train_showcase.config(again, TINY), dest)
    result = train_showcase.main(["--out", str(again), "--scenes", "4", "--test_scenes", "2", "--max_steps", "1", *TINY])
    assert result["step"] == 3
    assert [p.name for p in checkpoints(again / "checkpoints")] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]


def test_the_shipped_model_loads_by_name():
    entry = RELEASED["showcase"]
    path, preset = resolve_checkpoint("showcase")
    assert path == entry.local_path == ROOT / "checkpoints" / "showcase.pt" and preset == ROOT / "configs" / "showcase.yaml"
    assert path.stat().st_size < 10 * 2**20  # the limit for a file in the repository
    model, cfg, ckpt = load_model("showcase")
    assert ckpt["step"] > 0 and ckpt["data"]["size"] == cfg.model.image_tokenizer.image_size == 32
    listing = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_checkpoint.py"), "--list"],
                             capture_output=True, text=True, check=True).stdout
    assert "checkpoints/showcase.pt (in this repository)" in listing
