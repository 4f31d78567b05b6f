"""Convert pixelSplat-style chunks (RealEstate10K, ACID) into the scene format of data/scene_format.

    python -m data.process_data --base_path ROOT --output_dir OUT --mode train [--num_workers 4]
    python -m data.process_data --base_path ROOT --output_dir OUT --num_processes 32 --chunk_size 10

The reference's flags (LVSM's process_data.py, Efficient-LVSM's utils/process_data.py) mean the same
here: --num_processes is --num_workers, --chunk_size the number of .torch files handed to a worker at
a time (its Pool.imap chunksize; the output does not depend on it), --data_dir is --base_path.
    python -m data.process_data --base_path ROOT --output_dir OUT --check

Reads every ROOT/<mode>/*.torch: a list of scenes {"key", "url", "timestamps" int64 [n],
"cameras" float [n, 18], "images": n uint8 tensors of JPEG bytes}. A camera row is fx, fy, cx, cy
normalized by the image width and height, two unused values, then the 3x4 world-to-camera matrix
row-major. Writes OUT/<mode>/images/<key>/<frame:05d>.jpg (the JPEG bytes unchanged),
OUT/<mode>/metadata/<key>.json (intrinsics in pixels) and OUT/<mode>/full_list.txt.

Resumable: a scene whose JSON exists is skipped. The JSON is written last and atomically, so a scene
cut off halfway is redone. A scene with an undecodable frame, a bad pose or mismatched lengths is
reported and left out whole: frame indices must stay those of the source (evaluation refers to them).
A chunk that does not load (not a torch file, truncated, or a pickle that weights_only=True refuses)
is reported by its path with the reason and skipped; the other chunks are converted.

Workers end with the converter: on Linux the kernel kills each one when its parent dies
(PR_SET_PDEATHSIG); elsewhere a worker checks its parent between scenes and exits once it is gone.
"""

import argparse
import ctypes
import io
import json
import multiprocessing
import os
import pickle
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from data.scene_format import IMAGE_ERRORS, write_text_atomic
from utils.geometry import check_intrinsics, check_poses

SCENE_FIELDS = ("key", "timestamps", "cameras", "images")
MAX_FAILURES_SHOWN = 20


def decode_cameras(cameras: torch.Tensor, sizes: list[tuple[int, int]]):
    """cameras [n, 18], sizes [(w, h)] * n -> (fxfycxcy [n, 4] in pixels, w2c [n, 4, 4]), float64."""
    cameras = cameras.to(torch.float64)
    n = cameras.shape[0]
    wh = torch.tensor(sizes, dtype=torch.float64)  # [n, 2]
    fxfycxcy = cameras[:, :4] * wh.repeat(1, 2)  # fx*w, fy*h, cx*w, cy*h
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 1, 4)
    w2c = torch.cat([cameras[:, 6:].reshape(n, 3, 4), last], dim=1)  # [n, 4, 4]
    return fxfycxcy, w2c


def decode_image(data: torch.Tensor) -> tuple[bytes, tuple[int, int]]:
    """uint8 tensor of JPEG bytes -> (the bytes, (w, h)); raises one of IMAGE_ERRORS if undecodable."""
    raw = data.numpy().tobytes()
    with Image.open(io.BytesIO(raw)) as im:
        im.load()  # decodes every pixel: catches truncated data that the header alone would not
        return raw, im.size


def convert_scene(scene, out_dir: Path) -> tuple[str, str, str | None]:
    """Convert one scene into out_dir -> (key, "converted" | "skipped" | "failed", reason or None)."""
    missing = [f for f in SCENE_FIELDS if not (isinstance(scene, dict) and f in scene)]
    key = scene.get("key", "<no key>") if isinstance(scene, dict) else "<not a dict>"
    if missing:
        return str(key), "failed", f"missing fields {missing}"
    if not isinstance(key, str) or not key or "/" in key or "\\" in key or key.startswith("."):
        return str(key), "failed", "key is not usable as a file name"
    json_path = out_dir / "metadata" / f"{key}.json"
    if json_path.exists():
        return key, "skipped", None
    images, cameras, timestamps = scene["images"], scene["cameras"], scene["timestamps"]
    if not (isinstance(cameras, torch.Tensor) and isinstance(images, list)
            and all(isinstance(x, torch.Tensor) for x in images)):
        return key, "failed", "cameras must be a tensor and images a list of uint8 tensors"
    n = len(images)
    if tuple(cameras.shape) != (n, 18) or len(timestamps) != n:
        return key, "failed", (f"mismatched lengths: {n} images, cameras {list(cameras.shape)}, "
                               f"{len(timestamps)} timestamps")
    if n == 0:
        return key, "failed", "no frames"
    decoded = []
    for i, data in enumerate(images):
        try:
            decoded.append(decode_image(data))
        except IMAGE_ERRORS as e:
            return key, "failed", f"frame {i}: undecodable JPEG ({e})"
    fxfycxcy, w2c = decode_cameras(cameras, [size for _, size in decoded])
    try:
        check_poses(w2c, name="w2c")
        check_intrinsics(fxfycxcy, name="fxfycxcy")
    except ValueError as e:
        return key, "failed", str(e)
    image_dir = out_dir / "images" / key
    image_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (raw, _) in enumerate(decoded):
        (image_dir / f"{i:05d}.jpg").write_bytes(raw)
        frames.append({"image_path": f"../images/{key}/{i:05d}.jpg",
                       "fxfycxcy": fxfycxcy[i].tolist(), "w2c": w2c[i].tolist()})
    # Written last: its presence is what marks the scene as done.
    write_text_atomic(json_path, json.dumps({"scene_name": key, "frames": frames}))
    return key, "converted", None


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_parent_pid: int | None = None  # set in each worker by _worker_init


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: the worker dies with the converter instead of running on as an orphan."""
    global _parent_pid
    _parent_pid = parent_pid
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            print(f"warning: worker {os.getpid()}: prctl(PR_SET_PDEATHSIG) failed (errno "
                  f"{ctypes.get_errno()}); it checks for its parent between scenes instead", file=sys.stderr)
    _exit_if_orphaned()  # the parent may have died before prctl took effect


def _exit_if_orphaned() -> None:
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)  # the converter is gone: nobody will collect this worker's results


def load_chunk(chunk_path: Path):
    """torch.load(weights_only=True) a chunk -> its content; ValueError with the path and a one-line reason."""
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": harmless, and once per chunk
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(chunk_path, weights_only=True)
    except pickle.UnpicklingError as e:  # random bytes, or a legacy pickle holding non-tensor objects
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0].strip()
        raise ValueError(f"{chunk_path}: not a torch file, or a pickle that torch.load(weights_only=True) "
                         f"refuses ({detail})") from e
    except (OSError, RuntimeError, EOFError, ValueError) as e:  # missing, truncated or not a torch file
        first_line = str(e).strip().split("\n")[0] or "empty or truncated file"
        raise ValueError(f"{chunk_path}: does not load ({type(e).__name__}: {first_line})") from e


def convert_chunk(chunk_path: Path, out_dir: Path) -> list[tuple[str, str, str | None]]:
    """Convert every scene of one chunk; a chunk that does not load is one failure named by its path."""
    try:
        scenes = load_chunk(chunk_path)
    except ValueError as e:
        return [(str(chunk_path), "failed", f"chunk skipped: {str(e).removeprefix(f'{chunk_path}: ')}")]
    if not isinstance(scenes, list):
        return [(str(chunk_path), "failed", f"chunk must hold a list of scenes, got {type(scenes).__name__}")]
    results = []
    for scene in scenes:
        _exit_if_orphaned()
        results.append(convert_scene(scene, out_dir))
    return results


def convert_chunks(chunk_paths: list[Path], out_dir: Path) -> list[tuple[str, str, str | None]]:
    """One worker task: --chunk_size files, converted one after the other."""
    return [result for path in chunk_paths for result in convert_chunk(path, out_dir)]


def write_full_list(out_dir: Path) -> int:
    """Rewrite out_dir/full_list.txt from the metadata JSONs present; returns how many it lists."""
    names = sorted(p.name for p in (out_dir / "metadata").glob("*.json"))
    write_text_atomic(out_dir / "full_list.txt", "".join(f"metadata/{name}\n" for name in names))
    return len(names)


def check_first_scene(chunk_path: Path) -> int:
    """Print the first scene of a chunk as it would be converted; converts nothing."""
    try:
        scenes = load_chunk(chunk_path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not isinstance(scenes, list) or not scenes:
        print(f"error: {chunk_path} holds no scenes", file=sys.stderr)
        return 2
    scene = scenes[0]
    _, size = decode_image(scene["images"][0])
    fxfycxcy, w2c = decode_cameras(scene["cameras"][:1], [size])
    print(f"chunk: {chunk_path}")
    print(f"key: {scene['key']}")
    print(f"frames: {len(scene['images'])}")
    print(f"image size (w, h): {size[0]} x {size[1]}")
    print(f"fxfycxcy (pixels): {fxfycxcy[0].tolist()}")
    print("w2c:")
    for row in w2c[0].tolist():
        print("  " + " ".join(f"{x: .6f}" for x in row))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base_path", "--data_dir", dest="base_path", required=True,
                        help="folder holding <mode>/*.torch")
    parser.add_argument("--output_dir", help="where <mode>/ is written (not needed with --check)")
    parser.add_argument("--mode", default="train", choices=("train", "test"))
    parser.add_argument("--num_workers", "--num_processes", dest="num_workers", type=int,
                        default=min(4, os.cpu_count() or 1),
                        help="worker processes (the reference: --num_processes)")
    parser.add_argument("--chunk_size", type=int, default=1,
                        help=".torch files handed to a worker at a time (as the reference's); output is the same")
    parser.add_argument("--check", action="store_true",
                        help="print the first scene's camera and image size; convert nothing")
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error(f"--num_workers (--num_processes) must be >= 1, got {args.num_workers}")
    if args.chunk_size < 1:
        parser.error(f"--chunk_size must be >= 1, got {args.chunk_size}")
    if not args.check and args.output_dir is None:
        parser.error("--output_dir is required unless --check is given")

    src = Path(args.base_path) / args.mode
    chunks = sorted(src.glob("*.torch")) if src.is_dir() else []
    if not chunks:
        why = "does not exist" if not src.is_dir() else "has no .torch files"
        print(f"error: {src} {why}", file=sys.stderr)
        return 2
    if args.check:
        return check_first_scene(chunks[0])

    out_dir = Path(args.output_dir) / args.mode
    (out_dir / "metadata").mkdir(parents=True, exist_ok=True)
    results = []
    with tqdm(total=len(chunks), desc=f"converting {args.mode}", unit="chunk") as bar:
        if args.num_workers == 1:
            for chunk in chunks:
                results += convert_chunk(chunk, out_dir)
                bar.update()
        else:
            # spawn, not fork: forking a parent whose torch thread pools already run can deadlock.
            batches = [chunks[i:i + args.chunk_size] for i in range(0, len(chunks), args.chunk_size)]
            with ProcessPoolExecutor(args.num_workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_init, initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(convert_chunks, batch, out_dir): len(batch) for batch in batches}
                for future in as_completed(futures):
                    results += future.result()
                    bar.update(futures[future])
    listed = write_full_list(out_dir)

    failed = [(key, reason) for key, status, reason in results if status == "failed"]
    count = {s: sum(r[1] == s for r in results) for s in ("converted", "skipped")}
    print(f"{args.mode}: {count['converted']} scenes converted, {count['skipped']} skipped (already present), "
          f"{len(failed)} failed; {out_dir / 'full_list.txt'} lists {listed}")
    for key, reason in failed[:MAX_FAILURES_SHOWN]:
        print(f"  failed {key}: {reason}")
    if len(failed) > MAX_FAILURES_SHOWN:
        print(f"  ... and {len(failed) - MAX_FAILURES_SHOWN} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
