"""Efficient-LVSM against LVSM decoder-only trained for the same wall time on the synthetic rooms.

    python -m scripts.compare_training --data /tmp/rooms128 --minutes 4 --out docs
    python -m scripts.compare_training --plot_only --out docs      # redraw from the runs' logs

Both models get the same width and the same number of transformer layers (Efficient-LVSM: L encoder
+ L decoder layers; LVSM: 2L layers), the same data, seed, batch and learning rate, and the same
wall-clock budget. Held-out PSNR (the test split's evaluation index, 2 inputs, 3 targets) is logged
every --eval_every steps against steps and training seconds (evaluation time excluded). Writes
OUT/training_comparison.csv and, with matplotlib, OUT/training_comparison.png.
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("efficient_lvsm", "lvsm_decoder_only")


def model_overrides(name: str, layers: int) -> list[str]:
    depth = f"model.transformer.n_layer={layers if name == 'efficient_lvsm' else 2 * layers}"
    return [f"model.class_name={name}", depth]


def run_model(name: str, args, runs: Path) -> Path:
    data = Path(args.data)
    overrides = [
        *model_overrides(name, args.layers), f"model.transformer.d={args.width}", "model.transformer.d_head=64",
        f"model.image_tokenizer.image_size={args.size}", f"model.target_pose_tokenizer.image_size={args.size}",
        f"training.dataset_path={data / 'train' / 'full_list.txt'}", f"training.checkpoint_dir={runs / name}",
        f"training.eval_dataset_path={data / 'test' / 'full_list.txt'}",
        f"training.eval_index_path={data / 'test' / 'evaluation_index.json'}",
        f"training.eval_every={args.eval_every}", "training.eval_max_scenes=100", "training.num_target_views=6",
        f"training.batch_size_per_gpu={args.batch}", f"training.lr={args.lr}", "training.warmup=200",
        "training.scheduler_type=constant", "training.train_steps=1000000", "training.train_epochs=null",
        "training.checkpoint_every_epoch=null", f"training.train_time={args.minutes / 60}",
        "training.perceptual_loss_weight=0", "training.view_selector.min_frame_dist=8",
        "training.view_selector.max_frame_dist=24", "training.num_workers=6", "training.prefetch_factor=4",
        "training.checkpoint_every=100000", "training.vis_every=0", "training.print_every=100",
        "training.resume=none", "training.seed=0", f"training.use_compile={str(args.compile).lower()}",
        *args.overrides]
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "efficient_lvsm_256.yaml"),
           *overrides]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return runs / name / "metrics.jsonl"


def collect(runs: Path) -> list[dict]:
    rows = []
    for name in MODELS:
        path = runs / name / "metrics.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "eval_psnr" in record:
                rows.append({"model": name, "step": record["step"], "train_seconds": record["train_seconds"],
                             "eval_psnr": record["eval_psnr"]})
    return rows


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: wrote the CSV only (pip install matplotlib for the plot)")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        for ax, key in zip(axes, ("step", "train_seconds")):
            ax.plot([r[key] for r in mine], [r["eval_psnr"] for r in mine], marker="o", ms=3, label=name)
    for ax, label in zip(axes, ("training steps", "training seconds")):
        ax.set_xlabel(label)
        ax.set_ylabel("held-out PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="experiments/rooms128", help="synthetic rooms (generated if absent)")
    p.add_argument("--out", default="docs")
    p.add_argument("--runs", default="experiments/compare", help="checkpoints and logs of both runs")
    p.add_argument("--minutes", type=float, default=4.0, help="wall-clock training budget per model")
    p.add_argument("--scenes", type=int, default=2000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--layers", type=int, default=6, help="Efficient-LVSM: L + L layers; LVSM: 2L")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--eval_every", type=int, default=250)
    p.add_argument("--compile", action="store_true", help="torch.compile both (its compile time counts in the budget)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--plot_only", action="store_true")
    p.add_argument("overrides", nargs="*", help="more training overrides for both runs")
    args = p.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    if not args.plot_only:
        from data import synthetic
        synthetic.generate(args.data, "rooms", args.scenes, 100, frames=32, size=args.size, seed=0,
                           workers=8, progress=True)
        for name in args.models:
            run_model(name, args, runs)
    rows = collect(runs)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "training_comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "step", "train_seconds", "eval_psnr"])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "training_comparison.png")
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        if mine:
            best = max(mine, key=lambda r: r["eval_psnr"])
            print(f"{name}: {mine[-1]['step']} steps in {mine[-1]['train_seconds']:.0f} s, last PSNR "
                  f"{mine[-1]['eval_psnr']:.2f} dB, best {best['eval_psnr']:.2f} dB at step {best['step']}")
    return rows


if __name__ == "__main__":
    main()
