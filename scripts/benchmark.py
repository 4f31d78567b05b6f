"""Speed of Efficient-LVSM and LVSM decoder-only: full renders, incremental adds, one training step,
and (Efficient-LVSM) streams: adding a view and rendering against the views streamed, with and
without a cache budget (model/stream.py).

    python -m scripts.benchmark                       # paper sizes on a GPU (d 768, 12+12 / 24 layers, patch 8)
    python -m scripts.benchmark --size tiny --device cpu --runs 3    # what CI runs

Batch 1 (4 for training), bf16 weights for inference and bf16 autocast for training on GPU (fp32 on
CPU). Timing: CUDA-synchronized, after warm-up, median of --runs; peak memory; FLOPs from
torch.utils.flop_counter and the achieved TFLOP/s. Writes one CSV row per measurement (GPU, driver,
torch, dtype, compile settings), prints a markdown table, and draws a plot with matplotlib if present.
"""

import argparse
import csv
import statistics
import subprocess
import time
from pathlib import Path

import torch

from configs.schema import config_from_dict
from model import build_model
from utils.precision import autocast

SIZES = {  # model widths/depths, full-render settings (resolution, inputs, targets), incremental N, train res
    "paper": {"d": 768, "layers": 12, "full": [(256, 2, 1), (256, 2, 6), (512, 2, 1), (512, 2, 6)],
              "incremental": [4, 8, 16, 32, 48, 64], "inc_res": 256, "inc_targets": 8, "train": (256, 2, 6, 4),
              "stream": [64, 256, 1024], "stream_budget": 8},
    "tiny": {"d": 64, "layers": 2, "full": [(32, 2, 1), (32, 2, 6), (64, 2, 1), (64, 2, 6)],
             "incremental": [2, 4, 8], "inc_res": 32, "inc_targets": 8, "train": (32, 2, 6, 4),
             "stream": [8, 32, 128], "stream_budget": 8},
}
MODELS = ("efficient_lvsm", "lvsm_decoder_only")


def make_model(name: str, size: dict, res: int, device, dtype):
    layers = size["layers"] if name == "efficient_lvsm" else 2 * size["layers"]
    cfg = config_from_dict({"model": {"class_name": name, "image_tokenizer": {"image_size": res},
                                      "target_pose_tokenizer": {"image_size": res},
                                      "transformer": {"d": size["d"], "d_head": 64 if size["d"] >= 256 else 16,
                                                      "n_layer": layers}}})
    return build_model(cfg.model).to(device=device, dtype=dtype)


def views(b: int, v: int, res: int, device, seed: int = 0):
    """images [b, v, 3, res, res], c2w on a small arc, fxfycxcy."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, v, 3, res, res, generator=g)
    c2w = torch.eye(4).repeat(b, v, 1, 1)
    c2w[..., 0, 3] = torch.linspace(-0.5, 0.5, v)
    fxfycxcy = torch.tensor([res * 0.9, res * 0.9, res / 2, res / 2]).repeat(b, v, 1)
    return images.to(device), c2w.to(device), fxfycxcy.to(device)


def timed(fn, runs: int, warmup: int, device) -> list[float]:
    """Wall milliseconds of fn() per run, CUDA-synchronized."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return times


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(section: str, name: str, setting: str, fn, args, device) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = timed(fn, args.runs, args.warmup, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    count = flops_of(fn)
    median = statistics.median(times)
    return {"section": section, "model": name, "setting": setting, "median_ms": median, "min_ms": min(times),
            "max_ms": max(times), "runs": len(times), "peak_gib": peak, "gflop": count / 1e9,
            "tflops_per_s": count / (median / 1000) / 1e12 if count else float("nan")}


@torch.no_grad()
def bench_full(name, size, args, device, dtype) -> list[dict]:
    rows = []
    for res, v_in, v_t in size["full"]:
        model = make_model(name, size, res, device, dtype).eval()
        model = torch.compile(model) if args.compile else model
        images, c2w, k = views(1, v_in + v_t, res, device)
        images = images.to(dtype)
        fn = lambda: model(images[:, :v_in], c2w[:, :v_in], k[:, :v_in], c2w[:, v_in:], k[:, v_in:])  # noqa: E731
        rows.append(measure("full", name, f"{res}px {v_in} in {v_t} out", fn, args, device))
    return rows


@torch.no_grad()
def bench_incremental(name, size, args, device, dtype) -> list[dict]:
    res, v_t, rows = size["inc_res"], size["inc_targets"], []
    model = make_model(name, size, res, device, dtype).eval()
    for n in size["incremental"]:
        images, c2w, k = views(1, n + 1 + v_t, res, device)
        images = images.to(dtype)
        tc2w, tk = c2w[:, n + 1:], k[:, n + 1:]
        cache = model.encode(images[:, :n], c2w[:, :n], k[:, :n])
        cache.reserve(n + 1)

        def fn():  # Efficient-LVSM encodes the new view only; LVSM's render recomputes every view
            model.encode(images[:, n:n + 1], c2w[:, n:n + 1], k[:, n:n + 1], cache=cache)
            out = model.render(cache, tc2w, tk)
            cache.remove(cache.view_ids[-1])  # back to n views for the next run
            return out
        # The cache's encode/render run eagerly (--compile applies to forward only).
        rows.append(measure("incremental", name, f"N={n} +1 view, {v_t} targets @{res}px", fn, args, device))
    return rows


@torch.no_grad()
def bench_stream(name, size, args, device, dtype) -> list[dict]:
    """After N views streamed: adding one more (with its eviction) and rendering inc_targets targets,
    unbounded, under a budget of stream_budget views (policy recent) and with each render attending
    to the stream_budget nearest views (selection)."""
    from model.stream import CacheBudget, StreamingScene
    if name != "efficient_lvsm":
        return []
    res, v_t, budget, rows = size["inc_res"], size["inc_targets"], size["stream_budget"], []
    model = make_model(name, size, res, device, dtype).eval()
    for n in size["stream"]:
        images, c2w, k = views(1, n + 1 + v_t, res, device)
        images = images.to(dtype)
        for label, b in (("all", CacheBudget()), (f"recent@{budget}", CacheBudget(max_views=budget, policy="recent")),
                         (f"select@{budget}", CacheBudget(select_views=budget))):
            stream = StreamingScene(model, b)
            for i in range(n):
                stream.add(images[0, i], c2w[0, i], k[0, i])

            def add():
                stream.add(images[0, n], c2w[0, n], k[0, n])
                if b.max_views is None:
                    stream.remove(stream.view_ids[-1])  # back to n views for the next run
            setting = f"N={n} streamed, {label}"
            held = {"views_held": stream.cache.num_views}
            rows.append({**measure("stream_add", name, setting + " +1 view", add, args, device), **held})
            attended = {**held, "views_attended": stream.render(c2w[0, n + 1:], k[0, n + 1:])[1]["views"]}
            rows.append({**measure("stream_render", name, f"{setting}, {v_t} targets @{res}px",
                                   lambda: stream.render(c2w[0, n + 1:], k[0, n + 1:]), args, device), **attended})
    return rows


def bench_train(name, size, args, device) -> list[dict]:
    res, v_in, v_t, b = size["train"]
    model = make_model(name, size, res, device, torch.float32).train()
    model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    images, c2w, k = views(b, v_in + v_t, res, device)
    amp = autocast(device, "bf16")  # bf16 on GPU, fp32 on CPU

    def fn():
        with amp:
            pred = model(images[:, :v_in], c2w[:, :v_in], k[:, :v_in], c2w[:, v_in:], k[:, v_in:])
            loss = torch.nn.functional.mse_loss(pred.float(), images[:, v_in:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return [measure("train", name, f"{res}px {v_in} in {v_t} out batch {b}", fn, args, device)]


def environment(device, args) -> dict:
    gpu, driver = "cpu", ""
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = "unknown"
    return {"gpu": gpu, "driver": driver, "torch": torch.__version__, "dtype": args.dtype, "compile": args.compile}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default=None, help="default: paper on GPU, tiny on CPU")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the models' forward (full render, training)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sections", nargs="+", default=["full", "incremental", "train", "stream"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--out", default="experiments/benchmark.csv")
    p.add_argument("--plot", default="experiments/benchmark.png")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.size = args.size or ("paper" if device.type == "cuda" else "tiny")
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    size, env, rows = SIZES[args.size], environment(device, args), []
    for name in args.models:
        if "full" in args.sections:
            rows += bench_full(name, size, args, device, dtype)
        if "incremental" in args.sections:
            rows += bench_incremental(name, size, args, device, dtype)
        if "train" in args.sections:
            rows += bench_train(name, size, args, device)
        if "stream" in args.sections:
            rows += bench_stream(name, size, args, device, dtype)
    rows = [{**env, "size": args.size, **r} for r in rows]
    write(rows, Path(args.out), Path(args.plot))
    return rows


def write(rows: list[dict], out: Path, plot_path: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{rows[0]['gpu']} (driver {rows[0]['driver'] or 'n/a'}), torch {rows[0]['torch']}, {rows[0]['dtype']}, "
          f"compile {rows[0]['compile']}, size {rows[0]['size']}\n")
    print("| section | model | setting | median ms | peak GiB | GFLOP | TFLOP/s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['section']} | {r['model']} | {r['setting']} | {r['median_ms']:.2f} | {r['peak_gib']:.2f} | "
              f"{r['gflop']:.1f} | {r['tflops_per_s']:.1f} |")
    print(f"\nCSV: {out}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    inc = [r for r in rows if r["section"] == "incremental"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in MODELS:
        mine = [r for r in inc if r["model"] == name]
        if mine:
            ax.plot([int(r["setting"].split()[0][2:]) for r in mine], [r["median_ms"] for r in mine], "o-", label=name)
    ax.set_xlabel("cached input views N")
    ax.set_ylabel("add one view + render (ms)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plot_path, dpi=120)
    print(f"plot: {plot_path}")


if __name__ == "__main__":
    main()
