"""Released checkpoints by name, through huggingface_hub in offline mode against a cache this test
fills in the hub's own layout (models--OWNER--NAME/refs/main, snapshots/<commit>/FILE): the name
gives the cached file and its preset; uncached names and unknown names are clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs.released import RELEASED
from configs.schema import load_config
from data import synthetic
from model import build_model
from tests.conftest import ROOT
from utils.config import to_dict

pytest.importorskip("huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache, name: str, payload: dict) -> None:
    entry = RELEASED[name]
    repo = cache / f"models--{entry.repo.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
    torch.save(payload, repo / "snapshots" / COMMIT / entry.filename)


def offline(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf_home")}


def run(code: str, env: dict) -> subprocess.CompletedProcess:
    """huggingface_hub reads its environment at import: each check runs in a fresh process."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_names_resolve_to_cached_files_and_their_presets(tmp_path):
    cache = tmp_path / "hub"
    fill_cache(cache, "efficient_lvsm_res256", {"marker": torch.tensor([7])})
    out = run("from configs.released import resolve_checkpoint as r; p, c = r('efficient_lvsm_res256'); "
              "import torch; print(p); print(c); print(int(torch.load(p, weights_only=True)['marker']))", offline(cache))
    assert out.returncode == 0, out.stderr
    path, config, marker = out.stdout.split()
    assert path.startswith(str(cache)) and path.endswith("efficient_lvsm_res256.pt") and COMMIT in path
    assert config == str(ROOT / "configs" / "efficient_lvsm_256.yaml") and marker == "7"

    # Not cached, offline: the error names the repo, the file and the cache, and says what to do.
    out = run("from configs.released import resolve_checkpoint as r; r('efficient_lvsm_res512')", offline(cache))
    assert out.returncode != 0
    assert "Ayakaee/efficient-lvsm/efficient_lvsm_res512.pt is not in the Hugging Face cache" in out.stderr
    assert str(cache) in out.stderr and "HF_HUB_OFFLINE" in out.stderr

    listing = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_checkpoint.py"), "--list"],
                             env=offline(cache), capture_output=True, text=True, timeout=300)
    assert "efficient_lvsm_res256 | Ayakaee/efficient-lvsm/efficient_lvsm_res256.pt | configs/efficient_lvsm_256.yaml" \
        " | 28.93 / 0.895 / 0.102" in listing.stdout
    got = subprocess.run([sys.executable, str(ROOT / "scripts" / "download_checkpoint.py"), "efficient_lvsm_res256",
                          "efficient_lvsm_res512"], env=offline(cache), capture_output=True, text=True, timeout=300)
    assert got.returncode == 1 and "efficient_lvsm_res256: " + str(cache) in got.stdout and "res512" in got.stderr


def test_unknown_names_and_paths():
    from configs.released import ReleasedCheckpointError, resolve_checkpoint
    with pytest.raises(ReleasedCheckpointError, match="efficient_lvsm_res256.*released: efficient_lvsm_res256"):
        resolve_checkpoint("efficient_lvsm_res265")
    path, config = resolve_checkpoint(ROOT / "tests" / "data" / "efficient_lvsm_sample0.pt")
    assert config is None and path.is_file()
    with pytest.raises(ReleasedCheckpointError, match="checkpoint file not found: missing/ckpt.pt"):
        resolve_checkpoint("missing/ckpt.pt")
    with pytest.raises(ReleasedCheckpointError, match="is 'efficient_lvsm_res256' \\(no .pt\\)"):
        resolve_checkpoint("efficient_lvsm_res256.pt")  # not "--config is required" later


def test_inference_by_name_uses_the_cached_file_and_preset(tmp_path):
    """inference.py --checkpoint NAME without --config: the preset comes with the name (here a tiny
    model saved under the released file name, with the preset's architecture shrunk by overrides)."""
    cache = tmp_path / "hub"
    data = tmp_path / "data"
    synthetic.generate(data, "rooms", 0, 2, frames=8, size=32, seed=0)
    shrink = ["model.transformer.d=32", "model.transformer.d_head=8", "model.transformer.n_layer=1",
              "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32",
              "model.image_tokenizer.patch_size=8", "model.target_pose_tokenizer.patch_size=8"]
    cfg = load_config(ROOT / "configs" / "efficient_lvsm_256.yaml", shrink)
    torch.manual_seed(0)
    fill_cache(cache, "efficient_lvsm_res256", {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    test = data / "test"
    out = subprocess.run([sys.executable, str(ROOT / "inference.py"), "--checkpoint", "efficient_lvsm_res256", *shrink,
                          "training.device=cpu", "training.use_amp=false", f"training.dataset_path={test / 'full_list.txt'}",
                          "training.num_views=5", "training.num_input_views=2", "training.num_target_views=3",
                          f"inference.view_idx_file_path={test / 'evaluation_index.json'}",
                          f"inference_out_dir={tmp_path / 'eval'}"],
                         cwd=ROOT, env=offline(cache), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(released efficient_lvsm_res256), config " + str(ROOT / "configs" / "efficient_lvsm_256.yaml") in out.stdout
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["checkpoint"].startswith(str(cache)) and summary["images"] == 6
