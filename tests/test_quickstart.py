"""The quick start runs end to end (a few steps here) and writes results and a gallery whose links resolve."""

import csv
import json

from scripts.quickstart import main


def test_quickstart_tiny(tmp_path, capsys):
    summary = main(["--out", str(tmp_path), "--scenes", "4", "--test_scenes", "2", "training.train_steps=2",
                    "training.batch_size_per_gpu=2", "training.view_selector.max_frame_dist=16",
                    "model.transformer.d=32", "model.transformer.d_head=16", "model.transformer.n_layer=1",
                    "training.checkpoint_every=2", "--showcase_scenes", "2"])
    assert summary["images"] == 6 and summary["scenes"] == 2 and summary["step"] == 2
    assert summary["counts"] == {"evaluated": 2, "skipped_by_index": 0, "missing_on_disk": 0, "not_in_index": 0,
                                 "duplicate_scene_key": 0, "malformed_in_index": 0, "listed_twice_in_index": 0,
                                 "more_targets_than_scored": 0, "targets_among_inputs": 0}
    results = tmp_path / "results"
    rows = list(csv.DictReader(open(results / "per_image.csv")))
    assert len(rows) == 6 and {"psnr", "psnr_nearest_view", "psnr_mean_image"} <= set(rows[0])
    assert json.loads((results / "summary.json").read_text())["margin_db"] == summary["margin_db"]
    page = (results / "index.html").read_text()
    data = json.loads(page.split("const DATA = ", 1)[1].split(";\n", 1)[0])
    files = [p for entry in data for p in [*entry["inputs"], entry["gt"], entry["render"], entry["error"]]]
    assert len(data) == 6 and all((results / p).is_file() for p in files)
    assert all(not p.startswith("/") for p in files)
    out = capsys.readouterr().out
    assert "held-out PSNR" in out and "index.html" in out
    # The walk video of the first held-out scene, linked from its gallery rows, and the pose check.
    videos = {entry.get("video") for entry in data if entry.get("video")}
    assert len(videos) == 1 and (results / videos.pop()).stat().st_size > 0
    check = summary["pose_check"]
    assert len(check["psnr_at_input_cameras"]) == 2 and isinstance(check["ok"], bool)
    assert (results / "pose_check" / "pose_check.json").is_file() and "pose sensitivity" in out
    # The shipped showcase model, beside it: the same files and summary keys, on the same held-out scenes.
    shown = json.loads((results / "showcase" / "summary.json").read_text())
    assert set(shown) == set(json.loads((results / "summary.json").read_text()))
    assert shown["images"] == 6 and shown["step"] > 0 and "Showcase model" in shown["model"]
    assert shown["scene_list"] == str(tmp_path / "data" / "test" / "full_list.txt")
    for name in ("per_image.csv", "per_scene.csv", "index.html", "pose_check/pose_check.json"):
        assert (results / "showcase" / name).is_file(), name
    assert list((results / "showcase" / "videos").glob("*.mp4"))
