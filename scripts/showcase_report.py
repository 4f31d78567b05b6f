"""Measure the shipped showcase model and write its results: checkpoints/showcase.json and docs/.

    python -m scripts.showcase_report [--checkpoint checkpoints/showcase.pt] [--run experiments/showcase]
                                      [--docs docs] [--pose_scenes 5]

On the model's held-out scenes (its data settings, regenerated under RUN/data when missing):
1. the quick start's evaluation (2 input views, 3 targets between them, 50 scenes) into
   RUN/report/eval/ (summary.json, per-image tables, gallery, the walk video of scene 0);
2. the pose check on the first `--pose_scenes` held-out scenes (RUN/report/pose_check_<i>/);
3. quality against the number of input views, 1 to 8, spread evenly between the two context frames
   as the reference spreads them (docs/showcase_views.csv/.png): mean PSNR over all targets, and over
   the targets that are not also an input frame (with 6 or more inputs some targets are);
4. the learning curve from RUN/checkpoints/metrics.jsonl (held-out PSNR against steps and hours;
   docs/showcase_curve.csv/.png) and a figure of held-out scene 0 (docs/showcase_scene.png: its two
   inputs, renders along its walk between and beyond them, the ground truth under each render).
Writes checkpoints/showcase.json (every number above, the step and training hours) and
docs/showcase.md (the tables). Figures need matplotlib (the `plots` extra); without it the CSVs and
tables are still written.
"""

import argparse
import contextlib
import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from configs.schema import config_from_dict
from data import synthetic
from data.factory import build_dataset
from evaluation.checkpoint import load_model
from evaluation.scenes import render_scenes, score_scene
from scripts.quickstart import evaluate, pose_check, pose_check_frames
from utils.config import to_dict
from utils.images import to_uint8

ROOT = Path(__file__).resolve().parents[1]
VIEW_COUNTS = range(1, 9)
FIGURE_SCALE = 4  # nearest-neighbour upscaling of the 32 px frames in the figure
FIGURE_FRAMES = 8  # renders along the walk in the figure


def view_count_curve(cfg, model, test_dir: Path) -> list[dict]:
    """Mean PSNR (and the baselines) from 1 to 8 input views on every held-out scene."""
    rows = []
    for n in VIEW_COUNTS:
        c = config_from_dict(to_dict(cfg), [f"training.num_views={n + 3}", f"training.num_input_views={n}",
                                            "training.num_target_views=3", "training.use_view_masking=false"])
        dataset = build_dataset(c, test_dir / "full_list.txt", eval_index=test_dir / "evaluation_index.json")
        images = []
        for record in render_scenes(model, dataset, list(range(len(dataset))), n, torch.device("cpu"),
                                    contextlib.nullcontext):
            inputs = set(record["frames"][:n])
            images += [{**r, "novel": r["frame"] not in inputs} for r in score_scene(record)]
        novel = [r for r in images if r["novel"]]
        rows.append({"input_views": n, "images": len(images), "psnr": mean(images, "psnr"),
                     "novel_images": len(novel), "psnr_novel": mean(novel, "psnr"),
                     "psnr_nearest_view": mean(novel, "psnr_nearest_view"),  # a target that is an input is
                     "psnr_mean_image": mean(novel, "psnr_mean_image")})  # its own nearest view: novel ones only
        print(f"{n} input views: PSNR {rows[-1]['psnr']:.2f} dB over {len(images)} targets, "
              f"{rows[-1]['psnr_novel']:.2f} dB over the {len(novel)} that are not inputs")
    return rows


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else math.nan


def learning_curve(metrics: Path) -> list[dict]:
    """Held-out PSNR lines of a run's metrics.jsonl: step, training hours, PSNR."""
    if not metrics.is_file():
        return []
    rows = []
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "eval_psnr" in record:
            rows.append({"step": record["step"], "train_hours": record["train_seconds"] / 3600,
                         "heldout_psnr": record["eval_psnr"]})
    return rows


def scene_figure(cfg, model, test_dir: Path, path: Path) -> None:
    """Held-out scene 0: its inputs, renders along its walk (between and beyond the inputs), ground truth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.scene_format import read_scene_json
    from demo.session import find_scene, load_scene
    from model.render import render_cameras

    first, last = pose_check_frames(test_dir, 0)
    _, meta = find_scene(test_dir / "full_list.txt", 0)
    count = len(read_scene_json(meta)["frames"])
    walk = np.unique(np.rint(np.linspace(max(0, first - 4), min(count - 1, last + 4), FIGURE_FRAMES)).astype(int))
    frames = sorted({first, last, *walk.tolist()})
    scene = load_scene(cfg, test_dir / "full_list.txt", 0, frames=frames)  # poses normalized over these frames
    ins = [frames.index(first), frames.index(last)]
    with torch.no_grad():
        renders = render_cameras(model, scene.images[ins], scene.c2w[ins], scene.fxfycxcy[ins], scene.c2w,
                                 scene.fxfycxcy)
    big = lambda x: to_uint8(x).repeat(FIGURE_SCALE, 0).repeat(FIGURE_SCALE, 1)  # noqa: E731
    fig, axes = plt.subplots(2, len(frames), figsize=(1.6 * len(frames), 3.6))
    for j, f in enumerate(frames):
        kind = "input" if f in (first, last) else ("between" if first < f < last else "beyond")
        axes[0, j].imshow(big(renders[j]))
        axes[0, j].set_title(f"frame {f}\n{kind}", fontsize=8, color="red" if kind == "input" else "black")
        axes[1, j].imshow(big(scene.images[j]))
        for ax in axes[:, j]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("render", fontsize=9)
    axes[1, 0].set_ylabel("ground truth", fontsize=9)
    fig.suptitle(f"held-out scene {meta.stem}: rendered from frames {first} and {last} only", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(curve: list[dict], views: list[dict], docs: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if curve:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
        for ax, key, label in zip(axes, ("step", "train_hours"), ("training steps", "training hours (2 CPU cores)")):
            ax.plot([r[key] for r in curve], [r["heldout_psnr"] for r in curve], marker=".")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("held-out PSNR (dB), 2 inputs")
        fig.suptitle("showcase model: held-out PSNR while training (50 held-out scenes)", fontsize=10)
        fig.tight_layout()
        fig.savefig(docs / "showcase_curve.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    n = [r["input_views"] for r in views]
    ax.plot(n, [r["psnr_novel"] for r in views], marker="o", label="model (targets not among the inputs)")
    ax.plot(n, [r["psnr_nearest_view"] for r in views], marker=".", ls="--", label="nearest input view")
    ax.plot(n, [r["psnr_mean_image"] for r in views], marker=".", ls=":", label="mean input image")
    ax.set_xlabel("input views")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "showcase_views.png", dpi=110)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    if rows:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def markdown(results: dict) -> str:
    e = results["evaluation"]
    lines = [f"Showcase model, step {results['step']} ({results['train_hours']:.2f} h of training on 2 CPU cores); "
             f"{e['scenes']} held-out scenes, {e['images']} target images, 2 input views.", "",
             "| measure | value |", "|---|---|",
             f"| held-out PSNR / SSIM | {e['psnr']:.2f} dB / {e['ssim']:.3f} |",
             f"| nearest input view / mean input image | {e['psnr_nearest_view']:.2f} / {e['psnr_mean_image']:.2f} dB |",
             f"| margin over the better baseline | {e['margin_db']:+.2f} dB |"]
    for p in results["pose_checks"]:
        ip = ", ".join(f"{x:.1f}" for x in p["psnr_at_input_cameras"])
        lines.append(f"| pose check {p['scene']}: PSNR at the input cameras; verdict | {ip} dB; "
                     f"{'all pass' if p['ok'] else '; '.join(p['problems'])} |")
    lines += ["", "| input views | PSNR, all targets | PSNR, targets not among the inputs (count) | nearest view (those "
              "targets) | mean image (those targets) |", "|---|---|---|---|---|"]
    for r in results["views"]:
        lines.append(f"| {r['input_views']} | {r['psnr']:.2f} | {r['psnr_novel']:.2f} ({r['novel_images']}) | "
                     f"{r['psnr_nearest_view']:.2f} | {r['psnr_mean_image']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "showcase.pt"))
    p.add_argument("--run", default="experiments/showcase", help="the training run: data/ and checkpoints/")
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument("--results", default=str(ROOT / "checkpoints" / "showcase.json"))
    p.add_argument("--pose_scenes", type=int, default=5)
    args = p.parse_args(argv)
    run, docs = Path(args.run), Path(args.docs)
    model, cfg, ckpt = load_model(args.checkpoint)
    synthetic.generate_from_settings(run / "data", ckpt["data"], train=False, progress=False)
    test_dir = run / "data" / "test"
    evaluation = evaluate(cfg, model, test_dir, run / "report" / "eval", torch.device("cpu"),
                          label=f"Showcase model, step {ckpt['step']}")
    poses = []
    for i in range(args.pose_scenes):
        r = pose_check(cfg, model, test_dir, run / "report" / f"pose_check_{i}", scene_index=i)
        poses.append({"scene": r["scene"], "input_frames": r["input_frames"],
                      "psnr_at_input_cameras": r["input_cameras"]["psnr"], "ok": r["ok"], "problems": r["problems"]})
    views = view_count_curve(cfg, model, test_dir)
    curve = learning_curve(run / "checkpoints" / "metrics.jsonl")
    docs.mkdir(parents=True, exist_ok=True)
    write_csv(docs / "showcase_views.csv", views)
    write_csv(docs / "showcase_curve.csv", curve)
    try:
        plots(curve, views, docs)
        scene_figure(cfg, model, test_dir, docs / "showcase_scene.png")
    except ImportError as err:
        print(f"no figures (matplotlib, the 'plots' extra, is missing: {err})")
    keep = ("scenes", "images", "psnr", "ssim", "psnr_nearest_view", "psnr_mean_image", "best_baseline", "margin_db")
    results = {"checkpoint": Path(args.checkpoint).name, "step": int(ckpt["step"]),
               "train_hours": (ckpt.get("train_seconds") or 0.0) / 3600, "data": ckpt["data"],
               "evaluation": {k: evaluation[k] for k in keep}, "pose_checks": poses,
               "pose_checks_all_pass": all(p["ok"] for p in poses), "views": views}
    Path(args.results).write_text(json.dumps(results, indent=1))
    (docs / "showcase.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
