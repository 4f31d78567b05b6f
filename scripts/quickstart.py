"""The quick start: synthetic rooms, a tiny Efficient-LVSM trained on the CPU, a held-out evaluation.

    python -m scripts.quickstart [--out experiments/quickstart] [key=value ...]

1. Generates the synthetic rooms (32 px; textures from one distribution for train and test, 3x the
   original texture scale) under OUT/data unless they are there already.
2. Trains configs/quickstart.yaml on them (resumes if stopped; about 7 minutes on 2 CPU cores, 7.8 at most).
3. Renders the held-out test scenes at the evaluation index's views and scores them against the two
   trivial baselines (the input view whose camera is nearest, and the mean of the input views),
   writing OUT/results/per_image.csv, per_scene.csv, summary.json and index.html, through the
   evaluation pipeline of inference.py (evaluation/protocol.py).
4. Runs the pose check on the first held-out scene (OUT/results/pose_check/) and writes a video of
   that scene along its own camera walk, between and beyond its two input views, render beside
   ground truth (OUT/results/videos/, linked from the gallery).
5. Does steps 3 and 4 for the shipped showcase model (checkpoints/showcase.pt, trained for hours by
   scripts/train_showcase.py) on held-out scenes of its own data settings, generated afresh (the
   quick start's own held-out scenes when the settings are the same): OUT/results/showcase/, the same
   files. `--no_showcase` skips it.
"""

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Optional

import torch

from configs.schema import config_from_dict, load_config
from data import synthetic
from data.factory import build_dataset
from evaluation.protocol import evaluate_scenes, lpips_scorer, write_outputs
from utils.config import to_dict
from utils.distributed import init_distributed

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "quickstart.yaml"

# The quick start's data, chosen by the experiments in docs/README.md (scripts/quickstart_experiments.py
# lists the alternatives): image size, frames per scene, and how scenes look and move.
DATA_SIZE = 32
DATA_FRAMES = 32
DATA_STYLE = synthetic.Style(textures="shared", tile_scale=3.0)


def evaluate(cfg, model, test_dir: Path, out: Path, device, video: bool = True,
             label: str = "Quick start: tiny Efficient-LVSM") -> dict:
    """The held-out scenes at their evaluation index (2 inputs, 3 targets) through the evaluation
    pipeline of inference.py: per-image and per-scene tables, summary.json and index.html in `out`;
    with `video`, the walk video of the first held-out scene (`walk_video`), linked from the gallery."""
    cfg = config_from_dict(to_dict(cfg), ["training.num_views=5", "training.num_input_views=2",
                                          "training.num_target_views=3", "training.square_crop=true",
                                          "training.use_view_masking=false"])
    dataset = build_dataset(cfg, test_dir / "full_list.txt", eval_index=test_dir / "evaluation_index.json")
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate_scenes(cfg, model.to(device), dataset, list(range(len(dataset))), device, contextlib.nullcontext,
                           out, lpips_scorer(cfg, device), progress="evaluating")
    if video:
        scene, path = walk_video(cfg, model, test_dir, out, device)
        for row in rows:
            if row["scene"] == scene:
                row["video"] = path
    header = {"model": label, "scene_list": str(test_dir / "full_list.txt"),
              "counts": {k: v for k, v in dataset.counts.items() if not k.endswith("names")}}
    return write_outputs(out, header, rows)


VIDEO_BEYOND = 4  # frames of the walk before the first and after the last input view
VIDEO_SCALE = 4  # nearest-neighbour upscaling of the tiny frames


def walk_video(cfg, model, test_dir: Path, out: Path, device, scene_index: int = 0) -> tuple[str, str]:
    """A video of held-out scene `scene_index` along its own camera walk, from VIDEO_BEYOND frames
    before its first input view to VIDEO_BEYOND after its last, rendered from the two input views of
    the evaluation index: each frame is [render | ground truth], so parallax and errors show.
    Returns (scene key, video path relative to out)."""
    from data.scene_format import read_scene_json
    from demo.session import find_scene, load_scene
    from model.render import render_cameras
    from utils.video import write_video

    first, last = pose_check_frames(test_dir, scene_index)
    _, meta = find_scene(test_dir / "full_list.txt", scene_index)
    frames = list(range(max(0, first - VIDEO_BEYOND), min(len(read_scene_json(meta)["frames"]), last + VIDEO_BEYOND + 1)))
    scene = load_scene(cfg, test_dir / "full_list.txt", scene_index, frames=frames)  # poses normalized over the walk
    ins = [frames.index(first), frames.index(last)]
    renders = render_cameras(model, scene.images[ins].to(device), scene.c2w[ins].to(device),
                             scene.fxfycxcy[ins].to(device), scene.c2w, scene.fxfycxcy)
    pairs = torch.cat([renders, scene.images], dim=-1)  # [f, 3, h, 2w]
    pairs = pairs.repeat_interleave(VIDEO_SCALE, -2).repeat_interleave(VIDEO_SCALE, -1)
    path = write_video(pairs, out / "videos" / f"{meta.stem}_walk.mp4", fps=8)
    print(f"video of held-out scene {meta.stem} along its walk (frames {frames[0]}-{frames[-1]}, inputs {first} and "
          f"{last}; left: render, right: ground truth): {path}")
    return meta.stem, path.relative_to(out).as_posix()


def pose_check(cfg, model, test_dir: Path, out: Path, scene_index: int = 0) -> dict:
    """The pose check on held-out scene `scene_index`, its evaluation-index input views: renders at the
    input cameras (MIN_INPUT_PSNR_QUICKSTART dB or more) and along the rotation and shift sweeps."""
    from demo.session import load_scene
    from evaluation.pose_check import run_pose_check, summary_lines, write_outputs as write_pose_outputs

    scene = load_scene(cfg, test_dir / "full_list.txt", scene_index, frames=pose_check_frames(test_dir, scene_index))
    report, pictures = run_pose_check(model, scene.images, scene.c2w, scene.fxfycxcy,
                                      min_input_psnr=MIN_INPUT_PSNR_QUICKSTART)
    report.update(scene=scene.name, input_frames=scene.frames)
    write_pose_outputs(out, report, pictures)
    print(f"pose check on held-out scene {scene.name}, input frames {scene.frames} ({out}):")
    print("\n".join(summary_lines(report)))
    return report


MIN_INPUT_PSNR_QUICKSTART = 25.0  # dB at the input cameras: the quick start's goal


def pose_check_frames(test_dir: Path, scene_index: int = 0) -> list[int]:
    """The evaluation index's context frames of held-out scene `scene_index` (the pose check's inputs)."""
    index = json.loads((Path(test_dir) / "evaluation_index.json").read_text())
    return index[sorted(index)[scene_index]]["context"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="experiments/quickstart", help="data, checkpoints and results go here")
    parser.add_argument("--scenes", type=int, default=500, help="training scenes to generate")
    parser.add_argument("--test_scenes", type=int, default=50, help="held-out scenes to generate")
    parser.add_argument("--no_showcase", action="store_true", help="do not evaluate the shipped showcase model")
    parser.add_argument("--showcase_scenes", type=int, default=None,
                        help="held-out scenes for the showcase model (default: all its data settings name, 50)")
    parser.add_argument("overrides", nargs="*", help="training config overrides, key=value")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    start = time.time()
    counts = synthetic.generate(data, "rooms", args.scenes, args.test_scenes, frames=DATA_FRAMES, size=DATA_SIZE, seed=0,
                                workers=2, progress=True, style=DATA_STYLE)
    print(f"synthetic rooms in {data}: {counts['train']} train, {counts['test']} test scenes "
          f"({counts['written']} rendered now, {time.time() - start:.0f} s)")

    cfg = load_config(PRESET, [
        f"training.dataset_path={data / 'train' / 'full_list.txt'}",
        f"training.checkpoint_dir={out / 'checkpoints'}", "training.device=cpu",
        "training.train_time=0.13",  # a guard: stop (and checkpoint) after 7.8 minutes on a slow machine
        *args.overrides])
    from training.loop import train  # imports torch and the models
    dist = init_distributed("cpu")
    started = time.time()
    result = train(cfg, dist, to_dict(load_config(PRESET)))
    train_seconds = time.time() - started

    # Evaluate the final weights: the newest checkpoint, read back as a user would.
    from model import build_model, load_weights
    from model.checkpoint import checkpoints
    model = build_model(cfg.model)
    ckpt = load_weights(model, checkpoints(cfg.training.checkpoint_dir)[-1])
    model.eval()
    summary = score(cfg, model, data / "test", out / "results", dist.device, "Quick start: tiny Efficient-LVSM", start,
                    step=int(ckpt["step"]), train_seconds_this_run=train_seconds, train_result_step=result["step"])
    if not args.no_showcase:
        summary["showcase"] = showcase(out, data, args.test_scenes, dist.device, args.showcase_scenes)
    return summary


def score(cfg, model, test_dir: Path, results: Path, device, label: str, started: float, **facts) -> dict:
    """evaluate + pose_check into `results` (summary.json, per_image.csv, per_scene.csv, index.html,
    pose_check/, videos/), with `facts` (step, training seconds) and the seconds since `started` in
    summary.json; prints the numbers."""
    summary = evaluate(cfg, model, test_dir, results, device, label=label)
    report = pose_check(cfg, model, test_dir, results / "pose_check")
    summary.update(**facts, pose_check={"scene": report["scene"], "input_frames": report["input_frames"],
                                        "psnr_at_input_cameras": report["input_cameras"]["psnr"], "ok": report["ok"],
                                        "problems": report["problems"]},
                   total_seconds_this_run=time.time() - started)
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{label}: held-out PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f} over {summary['images']} "
          f"images of {summary['scenes']} scenes; baselines: nearest input view {summary['psnr_nearest_view']:.2f} dB, "
          f"mean image {summary['psnr_mean_image']:.2f} dB (margin {summary['margin_db']:+.2f} dB)")
    print(f"results: {results / 'summary.json'}, per image: {results / 'per_image.csv'}")
    print(f"gallery: {(results / 'index.html').resolve()}")
    return summary


def showcase(out: Path, data: Path, test_scenes: int, device, scenes: Optional[int] = None) -> Optional[dict]:
    """The shipped showcase model on held-out scenes of its own data settings (the checkpoint's `data`;
    its first `scenes` held-out scenes), generated afresh: the quick start's own (OUT/data/test) when
    its settings and count are the same, else OUT/showcase_data. None (and a note) if it is missing."""
    from configs.released import RELEASED
    from evaluation.checkpoint import load_model

    started = time.time()
    if not RELEASED["showcase"].local_path.is_file():
        print(f"\nno showcase model at {RELEASED['showcase'].local_path}: skipped (it ships with the repository)")
        return None
    model, cfg, ckpt = load_model("showcase", device=device)
    settings = {**ckpt["data"], "num_test": scenes or ckpt["data"]["num_test"]}
    ours = synthetic.settings_of("rooms", settings["num_train"], test_scenes, DATA_FRAMES, DATA_SIZE, 0, DATA_STYLE)
    test_root = data if synthetic.normalized(settings) == ours else out / "showcase_data"
    synthetic.generate_from_settings(test_root, settings, train=False, progress=False)
    hours = (ckpt.get("train_seconds") or 0.0) / 3600
    return score(cfg, model, test_root / "test", out / "results" / "showcase", device,
                 f"Showcase model (checkpoints/showcase.pt, step {ckpt['step']}, {hours:.1f} h on 2 CPU cores)", started,
                 step=int(ckpt["step"]), train_seconds_this_run=0.0, train_result_step=int(ckpt["step"]))


if __name__ == "__main__":
    main()
