"""The experiments behind the quick start's defaults: which data, model size and optimization learn
geometry fastest on a 2-core CPU. Each experiment generates its synthetic rooms (cached per data
setting), trains for a wall-clock budget, evaluates the held-out scenes with the quick start's
evaluation and runs the pose check on one held-out scene.

    python -m scripts.quickstart_experiments --out experiments/qs_sweep run NAME [NAME ...]
    python -m scripts.quickstart_experiments --out experiments/qs_sweep report --docs docs

`run` appends one JSON line per experiment to OUT/results.jsonl (settings, steps, wall time,
held-out PSNR, SSIM, baselines, pose check numbers) and keeps each run's metrics.jsonl; `report`
writes DOCS/quickstart_experiments.csv and .md (the table), DOCS/quickstart_curves.csv and, with matplotlib,
DOCS/quickstart_curves.png (training PSNR and held-out PSNR against wall time). `list` prints the
experiments. Run them on an otherwise idle machine: the budget is wall time.
"""

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from configs.schema import load_config
from data import synthetic
from utils.config import to_dict

ROOT = Path(__file__).resolve().parents[1]

# Data settings: name -> (image size, frames per scene, Style kwargs, train scenes, test scenes).
DATA = {
    "orig64": (64, 32, {}, 500, 50),
    "shared64": (64, 32, {"textures": "shared"}, 500, 50),
    "shared64_low": (64, 32, {"textures": "shared", "tile_scale": 3.0}, 500, 50),
    "shared32_low": (32, 32, {"textures": "shared", "tile_scale": 3.0}, 500, 50),
    "shared32": (32, 32, {"textures": "shared"}, 500, 50),
    "shared32_low_near": (32, 32, {"textures": "shared", "tile_scale": 3.0, "walk_scale": 0.5}, 500, 50),
    "patterns32_low": (32, 32, {"textures": "shared", "tile_scale": 3.0, "photo_fraction": 0.0}, 500, 50),
}

# Model keys for a size / patch pair at width d, depth n (Efficient-LVSM: n encoder and n decoder layers).
def model_keys(size: int, patch: int, d: int = 128, n: int = 3, d_head: int = 32) -> list[str]:
    return [f"model.image_tokenizer.image_size={size}", f"model.image_tokenizer.patch_size={patch}",
            f"model.target_pose_tokenizer.image_size={size}", f"model.target_pose_tokenizer.patch_size={patch}",
            f"model.transformer.d={d}", f"model.transformer.n_layer={n}", f"model.transformer.d_head={d_head}"]


# name -> (data setting, overrides of configs/tiny.yaml, what it tests)
EXPERIMENTS = {
    "E0_orig": ("orig64", model_keys(64, 8), "the previous quick start: 64 px, patch 8, held-out textures"),
    "E1_shared": ("shared64", model_keys(64, 8), "test textures from the training distribution"),
    "E2_lowfreq": ("shared64_low", model_keys(64, 8), "+ textures 3x larger (lower frequency)"),
    "E3_32px_p4": ("shared32_low", model_keys(32, 4), "+ 32 px, patch 4: 64 tokens of 4x4 pixels"),
    "E4_32px_p8": ("shared32_low", model_keys(32, 8), "+ 32 px, patch 8: 16 tokens a view"),
    "E5_near": ("shared32_low_near", model_keys(32, 4), "E3 with half the camera baseline"),
    "E6_lr2e-3": ("shared32_low", model_keys(32, 4) + ["training.lr=2e-3"], "E3 with learning rate 2e-3"),
    "E7_bs16": ("shared32_low", model_keys(32, 4) + ["training.batch_size_per_gpu=16"], "E3 with batch 16"),
    "E8_d192": ("shared32_low", model_keys(32, 4, d=192, d_head=32), "E3 at width 192"),
    "E9_n2": ("shared32_low", model_keys(32, 4, n=2), "E3 with 2 + 2 layers"),
    "E10_6views": ("shared32_low", model_keys(32, 4) + ["training.num_views=6", "training.num_target_views=4"],
                   "E3 with 4 targets a sample"),
    "E11_32px_hf": ("shared32", model_keys(32, 4), "E3 with the original texture scale"),
    # QK-normalized attention cannot be sharper than logits of about sqrt(d_head) times the norms' gains
    # (1 at init): wider heads, or a learning rate that grows the gains faster, let a target patch pick
    # out its own input patch.
    "E12_p8_dh64": ("shared32_low", model_keys(32, 8, d_head=64), "E4 with heads of 64 (2 heads)"),
    "E13_p8_dh128": ("shared32_low", model_keys(32, 8, d_head=128), "E4 with one head of 128"),
    "E14_p8_lr3e-3": ("shared32_low", model_keys(32, 8) + ["training.lr=3e-3"], "E4 with learning rate 3e-3"),
    "E15_p8_dh128_lr3e-3": ("shared32_low", model_keys(32, 8, d_head=128) + ["training.lr=3e-3"],
                            "E13 with learning rate 3e-3"),
    # Longer runs (run with --budget_s 300) of the screened candidates.
    "F1_p8": ("shared32_low", model_keys(32, 8), "E4, twice the time"),
    "F2_p8_4targets": ("shared32_low", model_keys(32, 8) + ["training.num_views=6", "training.num_target_views=4"],
                       "F1 with 4 target views a sample (2 of them inputs on average)"),
    "F3_p8_dh64": ("shared32_low", model_keys(32, 8, d_head=64), "F1 with heads of 64"),
    "F4_p4_dh64": ("shared32_low", model_keys(32, 4, d_head=64), "32 px, patch 4, heads of 64"),
    "F5_p8_patterns": ("patterns32_low", model_keys(32, 8), "F1 on pattern textures only (no photos)"),
    "F6_p8_compile": ("shared32_low", model_keys(32, 8) + ["training.use_compile=true"], "F1 with torch.compile"),
    "F7_p8_bs32_lr2e-3": ("shared32_low", model_keys(32, 8) + ["training.batch_size_per_gpu=32", "training.lr=2e-3"],
                          "F1 with batch 32 and learning rate 2e-3"),
    "F8_p8_gap4": ("shared32_low", model_keys(32, 8) + ["training.view_selector.min_frame_dist=4"],
                   "F1 with training spans from 4 frames (was 8): more nearly identical views"),
    "F9_p8_dh64_near": ("shared32_low_near", model_keys(32, 8, d_head=64), "F3 with half the camera baseline"),
    "F10_p8_dh64_bs32": ("shared32_low", model_keys(32, 8, d_head=64) + ["training.batch_size_per_gpu=32",
                                                                         "training.lr=2e-3"], "F7 with heads of 64"),
    "F11_p8_dh64_bs64": ("shared32_low", model_keys(32, 8, d_head=64) + ["training.batch_size_per_gpu=64",
                                                                         "training.lr=3e-3"],
                         "F10 with batch 64 and learning rate 3e-3"),
}


def data_dir(out: Path, name: str) -> Path:
    size, frames, style, n_train, n_test = DATA[name]
    folder = out / "data" / name
    synthetic.generate(folder, "rooms", n_train, n_test, frames=frames, size=size, seed=0, workers=2,
                       style=synthetic.Style(**style))
    return folder


def steps_for(budget_s: float, steps_per_s: float) -> int:
    return max(50, int(budget_s * steps_per_s))


def measure_speed(cfg, seconds: float = 20.0) -> float:
    """Training steps a second of this config here (a short run, discarded)."""
    from training.loop import train
    from utils.distributed import init_distributed

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        probe = load_config(ROOT / "configs" / "tiny.yaml", [*cfg["overrides"], f"training.checkpoint_dir={tmp}",
                                                             "training.train_steps=100000",
                                                             f"training.train_time={seconds / 3600}",
                                                             "training.checkpoint_every=100000"])
        started = time.time()
        result = train(probe, init_distributed("cpu"), None)
        return result["step"] / (time.time() - started)


def run_one(out: Path, name: str, budget_s: float) -> dict:
    from evaluation.pose_check import run_pose_check
    from model import build_model, load_weights
    from model.checkpoint import checkpoints
    from scripts.quickstart import evaluate, pose_check_frames
    from demo.session import load_scene
    from training.loop import train
    from utils.distributed import init_distributed

    data_name, overrides, note = EXPERIMENTS[name]
    data = data_dir(out, data_name)
    run_dir = out / "runs" / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    base = [*overrides, f"training.dataset_path={data / 'train' / 'full_list.txt'}", "training.device=cpu",
            "training.wandb_mode=disabled"]
    speed = measure_speed({"overrides": base})
    steps = steps_for(budget_s, speed)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        *base, f"training.checkpoint_dir={run_dir}", f"training.train_steps={steps}",
        f"training.eval_every={max(1, steps // 6)}", f"training.eval_dataset_path={data / 'test' / 'full_list.txt'}",
        f"training.eval_index_path={data / 'test' / 'evaluation_index.json'}", "training.eval_max_scenes=16",
        f"training.checkpoint_every={steps}", f"training.train_time={1.5 * budget_s / 3600}"])
    started = time.time()
    train(cfg, init_distributed("cpu"), None)
    wall = time.time() - started
    model = build_model(cfg.model)
    ckpt = load_weights(model, checkpoints(run_dir)[-1])
    model.eval()
    summary = evaluate(cfg, model, data / "test", run_dir / "results", "cpu")
    scene = load_scene(cfg, data / "test" / "full_list.txt", 0, frames=pose_check_frames(data / "test", 0))
    report, _ = run_pose_check(model, scene.images, scene.c2w, scene.fxfycxcy, min_input_psnr=25.0)
    row = {"name": name, "note": note, "data": data_name, "overrides": overrides, "budget_s": budget_s,
           "steps_per_s_probe": round(speed, 2), "steps": int(ckpt["step"]), "train_wall_s": round(wall, 1),
           "heldout_psnr": summary["psnr"], "heldout_ssim": summary["ssim"],
           "psnr_nearest_view": summary["psnr_nearest_view"], "psnr_mean_image": summary["psnr_mean_image"],
           "margin_db": summary["margin_db"], "pose_input_psnr": report["input_cameras"]["psnr"],
           "pose_ok": report["ok"], "pose_problems": report["problems"],
           "sweep_min_change": {k: min(s["change_from_previous"]) for k, s in report["sweeps"].items()}}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))
    return row


def read_results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    latest = {r["name"]: r for r in rows}  # a rerun replaces the earlier row
    return list(latest.values())


def report(out: Path, docs: Path) -> None:
    rows = read_results(out)
    docs.mkdir(parents=True, exist_ok=True)
    table = docs / "quickstart_experiments.csv"
    fields = ["name", "note", "data", "steps", "train_wall_s", "heldout_psnr", "heldout_ssim", "psnr_nearest_view",
              "psnr_mean_image", "margin_db", "pose_input_psnr_mean", "pose_ok", "overrides"]
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            ip = r["pose_input_psnr"]
            writer.writerow({**r, "pose_input_psnr_mean": round(sum(ip) / len(ip), 2),
                             "overrides": " ".join(r["overrides"])})
    lines = ["| run | what changes | steps | train s | held-out PSNR | SSIM | best baseline | margin | "
             "PSNR at input cameras | follows |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ip, problems = r["pose_input_psnr"], " ".join(r["pose_problems"])
        follows = ", ".join(w for w, k in (("rotation", "rotate_y:"), ("shift", "shift_x:")) if k not in problems)
        lines.append(f"| {r['name']} | {r['note']} | {r['steps']} | {r['train_wall_s']:.0f} | {r['heldout_psnr']:.2f} | "
                     f"{r['heldout_ssim']:.3f} | {max(r['psnr_nearest_view'], r['psnr_mean_image']):.2f} | "
                     f"{r['margin_db']:+.2f} | {', '.join(f'{x:.1f}' for x in ip)} | {follows or 'neither'} |")
    (docs / "quickstart_experiments.md").write_text("\n".join(lines) + "\n")
    curves = []
    for r in rows:
        lines = (out / "runs" / r["name"] / "metrics.jsonl").read_text().splitlines()
        per_step = r["train_wall_s"] / max(1, r["steps"])
        for line in lines:
            m = json.loads(line)
            wall = m.get("train_seconds", m["step"] * per_step)  # held-out lines carry their own time
            curves.append({"name": r["name"], "step": m["step"], "wall_s": round(wall, 1),
                           "train_psnr": m.get("psnr"), "heldout_psnr": m.get("eval_psnr")})
    with open(docs / "quickstart_curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "step", "wall_s", "train_psnr", "heldout_psnr"])
        writer.writeheader()
        writer.writerows(curves)
    print(f"wrote {table} and {docs / 'quickstart_curves.csv'} ({len(rows)} experiments)")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (the plots extra): no PNG")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for r in rows:
        c = [x for x in curves if x["name"] == r["name"]]
        train = [x for x in c if x["train_psnr"] is not None]
        k = 10  # a running mean over 10 logged points: the batch PSNR is noisy
        smooth = [sum(x["train_psnr"] for x in train[max(0, i - k + 1):i + 1]) / len(train[max(0, i - k + 1):i + 1])
                  for i in range(len(train))]
        axes[0].plot([x["wall_s"] for x in train], smooth, label=r["name"], lw=1)
        h = [x for x in c if x["heldout_psnr"] is not None]
        axes[1].plot([x["wall_s"] for x in h], [x["heldout_psnr"] for x in h], marker="o", label=r["name"])
    axes[0].set(xlabel="training wall time (s, 2 CPU cores)", ylabel="training-batch PSNR (dB, running mean of 10)",
                title="training PSNR")
    axes[1].set(xlabel="training wall time (s, 2 CPU cores)", ylabel="held-out PSNR (dB, first 16 test scenes)",
                title="held-out PSNR (each data setting has its own test scenes)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "quickstart_curves.png", dpi=110)
    print(f"wrote {docs / 'quickstart_curves.png'}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="experiments/qs_sweep")
    p.add_argument("--budget_s", type=float, default=150.0, help="training wall time of each experiment")
    p.add_argument("--docs", default="docs")
    p.add_argument("command", choices=["run", "report", "list"])
    p.add_argument("names", nargs="*")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.command == "list":
        for name, (data, overrides, note) in EXPERIMENTS.items():
            print(f"{name}: {note} (data {data}; {' '.join(overrides)})")
    elif args.command == "run":
        for name in args.names:
            if name not in EXPERIMENTS:
                raise SystemExit(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
        for name in args.names:
            run_one(out, name, args.budget_s)
    else:
        report(out, Path(args.docs))


if __name__ == "__main__":
    main()
