"""Quality against the number of input views, on the same held-out targets, for any checkpoints.

    python -m scripts.view_count_eval --out docs/views                     # the shipped showcase model
    python -m scripts.view_count_eval --checkpoint showcase --checkpoint lvsm.pt --config lvsm.yaml \\
        --data data/test/full_list.txt --index data/test/evaluation_index.json --views 1,2,4,8,16

For each scene of the index: its targets stay fixed, and n input frames are chosen among the others
(`input_frames`): the n frames spread evenly over the non-target frames between the two context
frames (n = 1: the first context frame; n = 2: both), the range widened a frame at a time on both
sides while it holds fewer than n. No input is ever a target, so every score is of a novel view, the
same targets for every n. Poses are normalized over each sample's frames, as the evaluation does.
A released RealEstate10K checkpoint runs the same way with its config, its test list and index.
Writes view_counts.csv (model, views, scenes, targets, PSNR, and the nearest-view and mean-image
baselines) and view_counts.png in --out.

Without --data, the showcase model's held-out scenes are generated (the quick start's 50 rooms).
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from configs.schema import config_from_dict
from data import synthetic
from data.dataset_scene import SceneDataset
from data.factory import build_dataset
from data.scene_format import read_scene_json, read_scene_list
from evaluation.checkpoint import load_model
from evaluation.scenes import score_scene
from model.render import render_scene
from utils.config import ConfigError, to_dict
from utils.plots import finish, pyplot


def input_frames(context: list[int], targets: list[int], n: int, num_frames: int) -> list[int]:
    """n input frames for a scene of num_frames whose index entry is (context, targets); see the module
    docstring. Raises ValueError when the scene has fewer than n non-target frames."""
    excluded = set(targets)
    if num_frames - len(excluded) < n:
        raise ValueError(f"{num_frames} frames, {len(excluded)} of them targets: fewer than {n} inputs")
    lo, hi = context[0], context[-1]
    while True:
        free = [i for i in range(lo, hi + 1) if i not in excluded]
        if len(free) >= n:
            break
        lo, hi = max(0, lo - 1), min(num_frames - 1, hi + 1)
    if n == 1:
        return [free[0]]
    return [free[int(i)] for i in np.rint(np.linspace(0, len(free) - 1, n))]


def view_count_rows(cfg, model, list_file: Path, index_file: Path, counts: list[int], name: str,
                    device: torch.device = torch.device("cpu")) -> list[dict]:
    """Mean PSNR and baselines per input-view count over the index's scenes (the first num_target_views
    targets of each entry); scenes too short for a count are left out of that count, and counted."""
    dataset = build_dataset(cfg, list_file)
    if not isinstance(dataset, SceneDataset):
        raise ConfigError("the view-count evaluation reads scene lists (training.dataset_name: scene)")
    index = json.loads(Path(index_file).read_text())
    paths = {p.stem: p for p in read_scene_list(list_file)}
    entries = [(k, v) for k, v in index.items() if v is not None and k in paths]
    if not entries:
        raise ValueError(f"{index_file}: no entry names a scene of {list_file}")
    rows = []
    for n in counts:
        scores, skipped = [], 0
        for idx, (key, entry) in enumerate(entries):
            data = read_scene_json(paths[key])
            targets = entry["target"][:cfg.training.num_target_views]
            try:
                inputs = input_frames(entry["context"], targets, n, len(data["frames"]))
            except ValueError:
                skipped += 1
                continue
            sample = dataset.load(paths[key], data, inputs + targets, idx)
            views = {k: sample[k][None].to(device) for k in ("image", "c2w", "fxfycxcy")}
            with torch.no_grad():
                render = render_scene(model, views["image"][:, :n], views["c2w"][:, :n], views["fxfycxcy"][:, :n],
                                      views["c2w"][:, n:], views["fxfycxcy"][:, n:])
            record = {"scene": key, "scene_name": sample["scene_name"], "frames": inputs + targets,
                      "inputs": sample["image"][:n], "targets": sample["image"][n:], "render": render[0].float().cpu(),
                      "c2w": sample["c2w"]}
            scores += score_scene(record)
        mean = (lambda k: float(np.mean([s[k] for s in scores])) if scores else float("nan"))
        rows.append({"model": name, "views": n, "scenes": len(entries) - skipped, "skipped": skipped,
                     "targets": len(scores), "psnr": mean("psnr"), "psnr_nearest_view": mean("psnr_nearest_view"),
                     "psnr_mean_image": mean("psnr_mean_image")})
        print(f"{name}: {n} views: {rows[-1]['psnr']:.2f} dB over {len(scores)} targets "
              f"(nearest view {rows[-1]['psnr_nearest_view']:.2f})" + (f", {skipped} scenes too short" if skipped else ""))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        ax.plot([r["views"] for r in mine], [r["psnr"] for r in mine], marker="o", label=name)
    first = [r for r in rows if r["model"] == rows[0]["model"]]
    ax.plot([r["views"] for r in first], [r["psnr_nearest_view"] for r in first], ls="--", color="gray",
            label="nearest input view")
    finish(fig, ax, path, "input views", "PSNR on the same held-out targets (dB)")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", help="checkpoint file or released name (repeatable; "
                   "default: showcase)")
    p.add_argument("--config", action="append", help="its YAML (repeatable, in the order of --checkpoint; "
                   "'-' or absent: the one the checkpoint holds or its released preset)")
    p.add_argument("--name", action="append", help="its label in the table (default: the checkpoint)")
    p.add_argument("--data", default=None, help="scene list (default: the showcase's held-out rooms)")
    p.add_argument("--index", default=None, help="pixelSplat index (default: the list folder's evaluation_index.json)")
    p.add_argument("--views", default="1,2,3,4,6,8,12,16")
    p.add_argument("--targets", type=int, default=3, help="targets per scene (training.num_target_views)")
    p.add_argument("--out", default="experiments/views")
    args = p.parse_args(argv)
    checkpoints = args.checkpoint or ["showcase"]
    configs = (args.config or []) + ["-"] * len(checkpoints)
    names = (args.name or []) + [None] * len(checkpoints)
    if args.data is None:
        from scripts.train_showcase import data_settings
        root = Path("experiments/showcase/data")
        synthetic.generate_from_settings(root, data_settings(), train=False)
        args.data = str(root / "test" / "full_list.txt")
    list_file = Path(args.data)
    index = Path(args.index) if args.index else list_file.parent / "evaluation_index.json"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for ckpt, config, name in zip(checkpoints, configs, names):
        model, cfg, _ = load_model(ckpt, None if config == "-" else config)
        cfg = config_from_dict(to_dict(cfg), [f"training.num_target_views={args.targets}",
                                              "training.use_view_masking=false"])
        rows += view_count_rows(cfg, model, list_file, index, [int(v) for v in args.views.split(",")], name or ckpt)
    with open(out / "view_counts.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "view_counts.png")
    print(f"wrote {out / 'view_counts.csv'} and view_counts.png")
    return rows


if __name__ == "__main__":
    main()
