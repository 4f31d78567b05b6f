"""Replay scenes as streams of views through a budgeted scene cache; score every cache policy.

    python -m scripts.stream_replay --out docs/stream                       # the shipped showcase model
    python -m scripts.stream_replay --checkpoint ckpt.pt --config cfg.yaml --data walks/test/full_list.txt

Each scene's frames arrive in order, every `--holdout`-th one held out as a target. The stream's
poses are normalized once, by its first `--norm_frames` views (as the dataset normalizes a sample:
model scale independent of how long the stream gets), the same transform for every later view.
Every `--every` views and at the end, the held-out frames already passed (the path the stream has
walked: revisits bring later views near them) are rendered and scored (PSNR, up to `--targets` of
them, evenly spaced), and apart, those of the last stretch of `--every` views (`psnr_recent`: where
the stream is now). Configurations (one stream each): the unbounded cache ("all"); each policy of
`--policies` at each budget of `--budgets`; per-render selection of the k nearest views for k in
`--select`; each storage of `--storages` without a budget. Writes in --out: stream_steps.csv (every
evaluation point: views added, views held, bytes, add and render ms, PSNR), stream_summary.csv (per
configuration, means over scenes at the end), stream_budget.png (PSNR against budget per policy).

Without --data, long walks are generated (data.synthetic rooms with --laps, the quick start's look)
under --walks_dir. `--flat N` instead streams N views of one long walk with and without a budget and
writes stream_cost.csv / .png: add and render time and bytes against views added.
"""

import argparse
import csv
import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from data import synthetic
from data.dataset_scene import SceneDataset
from data.factory import build_dataset
from data.scene_format import read_scene_json
from demo.session import find_scene
from evaluation.checkpoint import load_model
from model.stream import POLICIES, CacheBudget, StreamingScene
from utils.geometry import apply_normalization, invert_pose, scene_normalization
from utils.metrics import psnr
from utils.plots import finish, pyplot

DEFAULT_BUDGETS = (2, 4, 8, 16, 32, 64)


def walks(out: Path, num: int, frames: int, laps: float, size: int, seed: int) -> Path:
    """Long synthetic walks (held-out split) with the quick start's look; returns the scene list."""
    from scripts.quickstart import DATA_STYLE
    style = dataclasses.replace(DATA_STYLE, laps=laps)
    synthetic.generate(out, "rooms", 0, num, frames=frames, size=size, seed=seed, style=style)
    return out / "test" / "full_list.txt"


def load_stream(cfg, list_file: Path, scene, norm_frames: int) -> dict:
    """All frames of a scene as the dataset loads them (size, crop), poses normalized by the first
    norm_frames frames' normalization. Returns {"images" [f, 3, h, w], "c2w" [f, 4, 4], "fxfycxcy", "name"}."""
    idx, path = find_scene(list_file, scene)
    dataset = build_dataset(cfg, list_file)
    if not isinstance(dataset, SceneDataset):
        raise ValueError("stream replay reads scene lists (training.dataset_name: scene)")
    data = read_scene_json(path)
    frames = list(range(len(data["frames"])))
    sample = dataset.load(path, data, frames, idx)
    c2w = invert_pose(torch.tensor([f["w2c"] for f in data["frames"]], dtype=torch.float64))
    to_mean, scale = scene_normalization(c2w[:norm_frames], cfg.training.scene_scale_factor)
    return {"images": sample["image"], "c2w": apply_normalization(c2w, to_mean, scale).float(),
            "fxfycxcy": sample["fxfycxcy"], "name": sample["scene_name"]}


def replay(model, stream: dict, budget: CacheBudget, holdout: int, every: int, targets: int,
           max_views: Optional[int] = None) -> list[dict]:
    """One stream through one budget; a row per evaluation point."""
    f = stream["images"].shape[0]
    held = [i for i in range(f) if i % holdout == holdout - 1]
    order = [i for i in range(f) if i % holdout != holdout - 1][:max_views]
    scene, rows, add_ms = StreamingScene(model, budget), [], []
    for count, frame in enumerate(order, start=1):
        info = scene.add(stream["images"][frame], stream["c2w"][frame], stream["fxfycxcy"][frame])
        add_ms.append(info["add_ms"])
        if count % every and count != len(order):
            continue
        seen = [i for i in held if i < frame]
        row = {"views_added": count, "frame": frame, "views_held": info["views"], "bytes": info["bytes"],
               "add_ms": float(np.mean(add_ms[-every:]))}
        if seen and targets:
            pick = [seen[int(round(x))] for x in np.linspace(0, len(seen) - 1, min(targets, len(seen)))]
            pick = sorted(set(pick))
            out, cost = scene.render(stream["c2w"][pick], stream["fxfycxcy"][pick])
            row.update(targets=len(pick), render_ms=cost["render_ms"], attended=cost["views"],
                       psnr=float(psnr(out.clamp(0, 1), stream["images"][pick]).mean()))
            near = [i for i in seen if i > frame - every * holdout // (holdout - 1)][-targets:]  # the last stretch
            out, _ = scene.render(stream["c2w"][near], stream["fxfycxcy"][near])
            row["psnr_recent"] = float(psnr(out.clamp(0, 1), stream["images"][near]).mean())
        rows.append(row)
    return rows


def configurations(policies, budgets, select, storages) -> list[tuple[str, CacheBudget]]:
    configs = [("all", CacheBudget())]
    # sink_recent keeps the first 2 views (1 under a budget of 2)
    configs += [(f"{p}@{b}", CacheBudget(max_views=b, policy=p, sink_views=min(2, b // 2)))
                for p in policies for b in budgets]
    configs += [(f"select@{k}", CacheBudget(select_views=k)) for k in select]
    configs += [(f"storage={s}", CacheBudget(storage=s)) for s in storages]
    return configs


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: list[dict]) -> list[dict]:
    """Per configuration, over scenes, at each stream's last evaluation point: PSNR, its drop against
    the unbounded cache, memory against it, attended views, add and render ms."""
    last = {}
    for r in rows:
        key = (r["config"], r["scene"])
        if key not in last or r["views_added"] > last[key]["views_added"]:
            last[key] = r
    configs = list(dict.fromkeys(r["config"] for r in rows))
    base = {s: r for (c, s), r in last.items() if c == "all"}
    out = []
    for c in configs:
        ends = [r for (cc, _), r in last.items() if cc == c and "psnr" in r]
        drops = [r["psnr"] - base[r["scene"]]["psnr"] for r in ends if r["scene"] in base]
        mem = [r["bytes"] / base[r["scene"]]["bytes"] for r in ends if r["scene"] in base]
        recent = [r["psnr_recent"] - base[r["scene"]]["psnr_recent"] for r in ends if r["scene"] in base]
        out.append({"config": c, "scenes": len(ends), "views_added": ends[0]["views_added"] if ends else None,
                    "psnr": float(np.mean([r["psnr"] for r in ends])), "vs_all_db": float(np.mean(drops)),
                    "psnr_recent": float(np.mean([r["psnr_recent"] for r in ends])),
                    "recent_vs_all_db": float(np.mean(recent)),
                    "worst_scene_db": float(np.min(drops)), "memory_vs_all": float(np.mean(mem)),
                    "attended": float(np.mean([r["attended"] for r in ends])),
                    "add_ms": float(np.mean([r["add_ms"] for r in ends])),
                    "render_ms": float(np.mean([r["render_ms"] for r in ends]))})
    return out


def plot_budget(summary: list[dict], path: Path, views: int) -> None:
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2))
    by = {c["config"]: c for c in summary}
    for policy in [p for p in POLICIES if p != "all"] + ["select"]:
        points = sorted((int(k.split("@")[1]), v["psnr"]) for k, v in by.items() if k.startswith(policy + "@"))
        if points:
            ax.plot(*zip(*points), marker="o", label=policy if policy != "select" else "select k nearest (all held)")
    if "all" in by:
        ax.axhline(by["all"]["psnr"], color="k", ls="--", label=f"all {views} views")
    finish(fig, ax, path, "views held (budget) / attended (select)", "PSNR of held-out frames passed (dB)")


def timed_render_rows(model, stream: dict, views: int, budget: int, every: int, repeats: int = 5) -> list[dict]:
    """Against views streamed (unbounded, a budget of `budget` views, selection of `budget`): the median
    time of the last `every` adds, and of `repeats` renders of one target."""
    rows, c2w, k = [], stream["c2w"], stream["fxfycxcy"]
    for name, b in (("all", CacheBudget()), (f"recent@{budget}", CacheBudget(max_views=budget, policy="recent")),
                    (f"select@{budget}", CacheBudget(select_views=budget))):
        scene, adds = StreamingScene(model, b), []
        for i in range(views):
            info = scene.add(stream["images"][i], c2w[i], k[i])
            adds.append(info["add_ms"])
            if (i + 1) % every == 0:
                times = [scene.render(c2w[i:i + 1], k[i:i + 1])[1]["render_ms"] for _ in range(repeats)]
                rows.append({"config": name, "views_added": i + 1, "views_held": info["views"], "bytes": info["bytes"],
                             "add_ms": float(np.median(adds[-every:])), "render_ms": float(np.median(times))})
    return rows


def plot_cost(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        x = [r["views_added"] for r in mine]
        for ax, key, label in zip(axes, ("add_ms", "render_ms", "bytes"), ("add one view (ms)", "render one view (ms)",
                                                                           "cache (MiB)")):
            y = [r[key] / 2**20 if key == "bytes" else r[key] for r in mine]
            ax.plot(x, y, label=name)
            ax.set_xlabel("views streamed")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="showcase", help="checkpoint file or released name (default: the shipped showcase)")
    p.add_argument("--config", default=None)
    p.add_argument("--data", default=None, help="scene list of the streams (default: generated long walks)")
    p.add_argument("--walks_dir", default="experiments/walks")
    p.add_argument("--num_scenes", type=int, default=6)
    p.add_argument("--frames", type=int, default=160, help="generated walks: frames each")
    p.add_argument("--laps", type=float, default=1.5, help="generated walks: laps of the loop")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--holdout", type=int, default=5, help="every n-th frame is a target, not streamed")
    p.add_argument("--every", type=int, default=16, help="evaluate every n views added")
    p.add_argument("--targets", type=int, default=16, help="held-out frames scored at each evaluation")
    p.add_argument("--norm_frames", type=int, default=16, help="views that fix the stream's pose normalization")
    p.add_argument("--policies", default="recent,sink_recent,coverage,attention")
    p.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)))
    p.add_argument("--select", default="2,4,8,16")
    p.add_argument("--storages", default="bf16,fp16,int8")
    p.add_argument("--flat", type=int, default=0, help="instead: stream this many views of one walk, costs only")
    p.add_argument("--flat_budget", type=int, default=8)
    p.add_argument("--out", default="experiments/stream")
    args = p.parse_args(argv)
    with torch.no_grad():
        return run(args)


def run(args) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, _ = load_model(args.checkpoint, args.config)
    size = cfg.model.image_tokenizer.image_size
    if args.flat:
        frames = args.flat + args.norm_frames
        laps = args.laps * frames / args.frames
        data = Path(args.data) if args.data else walks(Path(args.walks_dir) / f"flat_{frames}", 1, frames, laps, size,
                                                         args.seed)
        stream = load_stream(cfg, data, 0, args.norm_frames)
        rows = timed_render_rows(model, stream, args.flat, args.flat_budget, args.every)
        write_csv(out / "stream_cost.csv", rows)
        plot_cost(rows, out / "stream_cost.png")
        print(f"wrote {out / 'stream_cost.csv'} and stream_cost.png")
        return rows
    data = Path(args.data) if args.data else walks(Path(args.walks_dir) / f"walks_{args.frames}_{args.laps:g}",
                                                     args.num_scenes, args.frames, args.laps, size, args.seed)
    split = (lambda s: [x for x in s.split(",") if x])
    configs = configurations(split(args.policies), [int(b) for b in split(args.budgets)],
                             [int(k) for k in split(args.select)], split(args.storages))
    rows = []
    for scene in range(min(args.num_scenes, sum(1 for line in open(data) if line.strip()))):
        stream = load_stream(cfg, data, scene, args.norm_frames)
        started = time.perf_counter()
        for name, budget in configs:
            for r in replay(model, stream, budget, args.holdout, args.every, args.targets):
                rows.append({"scene": stream["name"], "config": name, **r})
        base = [r for r in rows if r["scene"] == stream["name"] and r["config"] == "all"][-1]
        print(f"{stream['name']}: {len(configs)} configurations in {time.perf_counter() - started:.0f} s; "
              f"all {base['views_added']} views: {base['psnr']:.2f} dB")
    write_csv(out / "stream_steps.csv", rows)
    summary = summarize(rows)
    write_csv(out / "stream_summary.csv", summary)
    plot_budget(summary, out / "stream_budget.png", summary[0]["views_added"])
    for s in summary:
        print(f"{s['config']:>18}: {s['psnr']:.2f} dB ({s['vs_all_db']:+.2f} vs all, worst scene {s['worst_scene_db']:+.2f}; "
              f"last stretch {s['recent_vs_all_db']:+.2f}), "
              f"memory x{s['memory_vs_all']:.3f}, attends {s['attended']:.0f} views, render {s['render_ms']:.1f} ms")
    return summary


if __name__ == "__main__":
    main()
