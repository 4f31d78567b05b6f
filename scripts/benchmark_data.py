"""Data pipeline speed: the synthetic generator, the chunk converter and the training loader.

    python -m scripts.benchmark_data --out /tmp/bench_data [--scenes 1000] [--loader_workers 0 1 2]

1. Generator: `--scenes` synthetic rooms of `--frames` frames at `--size` px, `--workers` processes.
2. Converter: `--chunk_scenes` of those scenes re-encoded as a pixelSplat chunk the way
   RealEstate10K ships (640x360 JPEG, normalized cameras), converted by data/process_data.py.
3. Loader: the converted scenes through SceneDataset (JPEG decode, resize to `--image_size`,
   square crop, pose normalization) in a DataLoader, samples per second for each worker count.
Prints a markdown table and writes OUT/benchmark_data.json. Existing outputs are reused for the
generator only when `--keep` is given (then its time is not measured).
"""

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from configs.schema import config_from_dict
from data import process_data, synthetic
from data.dataset_scene import collate
from data.factory import build_dataset
from data.scene_format import read_scene_json, read_scene_list, resolve_path

RE10K_SIZE = (640, 360)  # (w, h) of RealEstate10K frames


def bench_generator(out: Path, args) -> dict:
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    start = time.perf_counter()
    counts = synthetic.generate(out, "rooms", args.scenes, 0, args.frames, args.size, seed=0,
                                workers=args.workers, progress=True)
    seconds = time.perf_counter() - start
    return {"scenes": args.scenes, "written": counts["written"], "frames": args.frames, "size": args.size,
            "workers": args.workers, "seconds": seconds, "scenes_per_s": counts["written"] / seconds}


def write_chunk(scene_paths: list[Path], chunk: Path) -> None:
    """Re-encode generated scenes as one pixelSplat chunk at RealEstate10K's frame size."""
    w, h = RE10K_SIZE
    scenes = []
    for path in scene_paths:
        scene = read_scene_json(path)
        images, cameras = [], []
        for frame in scene["frames"]:
            with Image.open(resolve_path(frame["image_path"], path)) as im:
                size = im.size
                buf = io.BytesIO()
                im.convert("RGB").resize((w, h), Image.BICUBIC).save(buf, format="JPEG", quality=90)
            images.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
            fx, fy, cx, cy = frame["fxfycxcy"]
            k = [fx / size[0], fy / size[1], cx / size[0], cy / size[1]]  # normalized: the frame stretches
            cameras.append(k + [0.0, 0.0] + np.asarray(frame["w2c"])[:3].ravel().tolist())
        scenes.append({"key": scene["scene_name"], "url": "", "timestamps": torch.arange(len(images)),
                       "cameras": torch.tensor(cameras, dtype=torch.float32), "images": images})
    chunk.parent.mkdir(parents=True, exist_ok=True)
    torch.save(scenes, chunk)


def bench_converter(generated: Path, root: Path, args) -> dict:
    if root.exists():
        shutil.rmtree(root)
    scene_paths = read_scene_list(generated / "train" / "full_list.txt")[:args.chunk_scenes]
    write_chunk(scene_paths, root / "chunks" / "train" / "000000.torch")
    start = time.perf_counter()
    process_data.main(["--base_path", str(root / "chunks"), "--output_dir", str(root / "converted"),
                       "--mode", "train", "--num_workers", "1"])
    seconds = time.perf_counter() - start
    return {"scenes": len(scene_paths), "frames": len(scene_paths) * args.frames, "seconds": seconds,
            "frames_per_s": len(scene_paths) * args.frames / seconds}


def bench_loader(list_file: Path, workers: int, args) -> dict:
    cfg = config_from_dict({"model": {"image_tokenizer": {"image_size": args.image_size, "patch_size": 8}},
                            "training": {"num_views": args.num_views, "num_input_views": 2,
                                         "num_target_views": args.num_views - 2, "square_crop": True,
                                         "view_selector": {"min_frame_dist": args.num_views,
                                                           "max_frame_dist": args.frames - 1}}})
    ds = build_dataset(cfg, list_file)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collate, drop_last=True, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(0))
    batches, warmup, start = 0, 2, None
    while batches < args.batches + warmup:
        for _ in loader:
            batches += 1
            if batches == warmup:
                start = time.perf_counter()
            if batches == args.batches + warmup:
                break
    seconds = time.perf_counter() - start
    samples = args.batches * args.batch_size
    return {"workers": workers, "image_size": args.image_size, "views": args.num_views, "batch_size": args.batch_size,
            "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds,
            "views_per_s": samples * args.num_views / seconds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="scratch folder (rewritten)")
    p.add_argument("--scenes", type=int, default=1000)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="reuse generated scenes (generator time not measured)")
    p.add_argument("--chunk_scenes", type=int, default=20)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--num_views", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--loader_workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    out = Path(args.out)
    result = {"generator": bench_generator(out / "rooms", args)}
    result["converter"] = bench_converter(out / "rooms", out / "re10k_like", args)
    list_file = out / "re10k_like" / "converted" / "train" / "full_list.txt"
    result["loader"] = [bench_loader(list_file, w, args) for w in args.loader_workers]
    (out / "benchmark_data.json").write_text(json.dumps(result, indent=1))

    g, c = result["generator"], result["converter"]
    print("\n| stage | setting | throughput |\n|---|---|---|")
    print(f"| generator | {g['written']} rooms x {g['frames']} frames x {g['size']} px, {g['workers']} workers "
          f"| {g['scenes_per_s']:.2f} scenes/s ({g['seconds']:.1f} s) |")
    print(f"| converter | {c['scenes']} scenes, {c['frames']} JPEG frames 640x360, 1 worker "
          f"| {c['frames_per_s']:.0f} frames/s |")
    for r in result["loader"]:
        print(f"| loader | {r['image_size']} px, {r['views']} views, batch {r['batch_size']}, {r['workers']} workers "
              f"| {r['samples_per_s']:.1f} samples/s ({r['views_per_s']:.0f} views/s) |")
    return result


if __name__ == "__main__":
    main()
