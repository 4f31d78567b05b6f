"""inference.py: the evaluation protocol on a generated dataset, its outputs, counts, errors, and 1 vs 2 ranks."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from configs.schema import load_config
from data import synthetic
from inference import main
from model import build_model
from tests.conftest import ROOT
from utils.config import to_dict

TINY = ["model.transformer.d=32", "model.transformer.d_head=8", "model.transformer.n_layer=1",
        "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Generated rooms (3 test scenes), an index with a null entry, a missing scene and a broken
    scene, and a tiny Efficient-LVSM checkpoint."""
    root = tmp_path_factory.mktemp("eval")
    synthetic.generate(root / "rooms", "rooms", 0, 4, frames=10, size=32, seed=0)
    test = root / "rooms" / "test"
    index = json.loads((test / "evaluation_index.json").read_text())
    index["rooms_00003"] = None  # skipped by the index
    index["not_on_disk"] = {"context": [0, 5], "target": [1, 2, 3]}
    (test / "index.json").write_text(json.dumps(index))
    broken = json.loads((test / "metadata" / "rooms_00002.json").read_text())
    (test / "metadata" / broken["frames"][index["rooms_00002"]["context"][0]]["image_path"]).write_bytes(b"junk")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    torch.save({"model": model.state_dict(), "step": 7, "config": to_dict(cfg)}, root / "tiny.pt")
    return root


def args(setup, out, *extra):
    test = setup / "rooms" / "test"
    return ["--config", str(ROOT / "configs" / "tiny.yaml"), *TINY, "training.device=cpu",
            f"training.dataset_path = {test / 'full_list.txt'}", "training.num_views=5", "training.num_input_views=2",
            "training.num_target_views=3", "training.target_has_input=false", "inference.compute_metrics=true",
            f"inference.checkpoint_dir={setup / 'tiny.pt'}", f"inference.view_idx_file_path={test / 'index.json'}",
            f"inference_out_dir={out}", *extra]


def test_evaluation_writes_every_output(setup, tmp_path, capsys):
    summary = main(args(setup, tmp_path, "inference.render_video=true",
                        "inference.render_video_config.num_frames=4"))
    bar = capsys.readouterr().err  # tqdm: scenes done (3 in the dataset: one missing on disk, one skipped)
    assert "evaluating" in bar and "3/3" in bar and "scene/s" in bar
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())  # the config with the overrides applied
    assert resolved["training"]["num_target_views"] == 3 and resolved["inference"]["render_video"] is True
    assert resolved["inference_out_dir"] == str(tmp_path)
    assert summary["counts"] == {"evaluated": 3, "skipped_by_index": 1, "missing_on_disk": 1, "not_in_index": 0,
                                 "duplicate_scene_key": 0, "malformed_in_index": 0, "failed_to_load": 1,
                                 "listed_twice_in_index": 0, "more_targets_than_scored": 0, "targets_among_inputs": 0}
    assert summary["missing_on_disk"] == ["not_on_disk"] and summary["failed"][0]["scene"] == "rooms_00002"
    assert "junk" not in summary["failed"][0]["reason"] and ".png" in summary["failed"][0]["reason"]
    assert summary["scenes"] == 2 and summary["images"] == 6 and summary["checkpoint_step"] == 7
    assert summary["resolution"] == 32 and summary["input_views"] == 2 and len(summary["index_sha256"]) == 16
    assert 5 < summary["psnr"] < 60 and 0 < summary["ssim"] <= 1
    assert summary["lpips_status"] == "available" or summary["lpips_status"].startswith("unavailable: ")
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert len(rows) == 6 and {r["scene"] for r in rows} == {"rooms_00000", "rooms_00001"}
    per_scene = json.loads((tmp_path / "per_scene.json").read_text())
    assert [s["images"] for s in per_scene] == [3, 3]
    assert json.loads((tmp_path / "summary.json").read_text())["images"] == 6
    page = (tmp_path / "index.html").read_text()
    data = json.loads(page.split("const DATA = ", 1)[1].split(";\n", 1)[0])
    files = [p for e in data for p in [*e["inputs"], e["gt"], e["render"], e["error"], e["video"]]]
    assert len(data) == 6 and all((tmp_path / p).is_file() for p in files)
    assert any(p.startswith("videos/") for p in files)


def test_errors_name_the_culprit(setup, tmp_path):
    with pytest.raises(SystemExit, match="inference.checkpoint_dir"):
        main(args(setup, tmp_path, f"inference.checkpoint_dir={tmp_path / 'nothing'}"))
    with pytest.raises(SystemExit, match="does not fit LVSMDecoderOnly"):
        main(args(setup, tmp_path, "model.class_name=lvsm_decoder_only"))
    with pytest.raises(SystemExit, match="inference_out_dir"):
        main(args(setup, tmp_path)[:-1])


def _torchrun(setup, out, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(ROOT / "inference.py"), *args(setup, out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "per_image.json").read_text()), json.loads((out / "summary.json").read_text())


def test_two_ranks_give_the_results_of_one(setup, tmp_path):
    one, summary_one = _torchrun(setup, tmp_path / "one", 1)
    two, summary_two = _torchrun(setup, tmp_path / "two", 2)
    assert one == two and len(two) == 6  # same rows, each scene once
    assert summary_one["counts"] == summary_two["counts"]


def test_incremental_evaluation_matches_full(setup, tmp_path):
    full = main(args(setup, tmp_path / "full"))
    incremental = main(args(setup, tmp_path / "inc", "inference.use_incremental_inference=true"))
    assert incremental["incremental"] and not full["incremental"]
    rows = [json.loads((tmp_path / d / "per_image.json").read_text()) for d in ("full", "inc")]
    for a, b in zip(*rows):
        assert a["scene"] == b["scene"] and abs(a["psnr"] - b["psnr"]) < 1e-3
