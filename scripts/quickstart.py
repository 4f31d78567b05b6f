"""The quick start: synthetic rooms, a tiny Efficient-LVSM trained on the CPU, a held-out evaluation.

    python -m scripts.quickstart [--out experiments/quickstart] [key=value ...]

1. Generates the synthetic rooms (64 px) under OUT/data unless they are there already.
2. Trains configs/tiny.yaml on them (resumes if stopped; about 7 minutes on 2 CPU cores, 9 at most).
3. Renders the held-out test scenes at the evaluation index's views and scores them against the two
   trivial baselines (the input view whose camera is nearest, and the mean of the input views),
   writing OUT/results/per_image.csv, per_scene.csv, summary.json and index.html, through the
   evaluation pipeline of inference.py (evaluation/protocol.py).
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

from configs.schema import config_from_dict, load_config
from data import synthetic
from data.factory import build_dataset
from evaluation.protocol import evaluate_scenes, write_outputs
from utils.config import to_dict
from utils.distributed import init_distributed
from utils.metrics import LpipsScorer

ROOT = Path(__file__).resolve().parents[1]


def evaluate(cfg, model, test_dir: Path, out: Path, device) -> dict:
    """The held-out scenes at their evaluation index (2 inputs, 3 targets) through the evaluation
    pipeline of inference.py: per-image and per-scene tables, summary.json and index.html in `out`."""
    cfg = config_from_dict(to_dict(cfg), ["training.num_views=5", "training.num_input_views=2",
                                          "training.num_target_views=3", "training.square_crop=true"])
    dataset = build_dataset(cfg, test_dir / "full_list.txt", eval_index=test_dir / "evaluation_index.json")
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate_scenes(cfg, model.to(device), dataset, list(range(len(dataset))), device, contextlib.nullcontext,
                           out, LpipsScorer(device))
    header = {"model": "Quick start: tiny Efficient-LVSM", "scene_list": str(test_dir / "full_list.txt"),
              "counts": {k: v for k, v in dataset.counts.items() if not k.endswith("names")}}
    return write_outputs(out, header, rows)


def pose_check_frames(test_dir: Path, scene_index: int = 0) -> list[int]:
    """The evaluation index's context frames of held-out scene `scene_index` (the pose check's inputs)."""
    index = json.loads((Path(test_dir) / "evaluation_index.json").read_text())
    return index[sorted(index)[scene_index]]["context"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="experiments/quickstart", help="data, checkpoints and results go here")
    parser.add_argument("--scenes", type=int, default=500, help="training scenes to generate")
    parser.add_argument("--test_scenes", type=int, default=50, help="held-out scenes to generate")
    parser.add_argument("overrides", nargs="*", help="training config overrides, key=value")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    start = time.time()
    counts = synthetic.generate(data, "rooms", args.scenes, args.test_scenes, frames=32, size=64, seed=0, workers=2, progress=True)
    print(f"synthetic rooms in {data}: {counts['train']} train, {counts['test']} test scenes "
          f"({counts['written']} rendered now, {time.time() - start:.0f} s)")

    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"training.dataset_path={data / 'train' / 'full_list.txt'}",
        f"training.checkpoint_dir={out / 'checkpoints'}", "training.device=cpu",
        "training.train_time=0.15",  # a guard: stop (and checkpoint) after 9 minutes on a slow machine
        *args.overrides])
    from training.loop import train  # imports torch and the models
    dist = init_distributed("cpu")
    started = time.time()
    result = train(cfg, dist, to_dict(load_config(ROOT / "configs" / "tiny.yaml")))
    train_seconds = time.time() - started

    # Evaluate the final weights: the newest checkpoint, read back as a user would.
    from model import build_model, load_weights
    from model.checkpoint import checkpoints
    model = build_model(cfg.model)
    ckpt = load_weights(model, checkpoints(cfg.training.checkpoint_dir)[-1])
    summary = evaluate(cfg, model, data / "test", out / "results", dist.device)
    summary.update(step=int(ckpt["step"]), train_seconds_this_run=train_seconds, train_result_step=result["step"])
    (out / "results" / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nheld-out PSNR {summary['psnr']:.2f} dB over {summary['images']} images of {summary['scenes']} scenes; "
          f"baselines: nearest input view {summary['psnr_nearest_view']:.2f} dB, mean image "
          f"{summary['psnr_mean_image']:.2f} dB (margin {summary['margin_db']:+.2f} dB)")
    print(f"results: {out / 'results' / 'summary.json'}, per image: {out / 'results' / 'per_image.csv'}")
    print(f"gallery: {(out / 'results' / 'index.html').resolve()}")
    return summary


if __name__ == "__main__":
    main()
