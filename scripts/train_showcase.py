"""The showcase model: configs/showcase.yaml trained for hours on the built-in synthetic rooms, on a CPU.

    python -m scripts.train_showcase [--out experiments/showcase] [--continue_shipped] [key=value ...]
    python -m scripts.train_showcase --export       # the newest checkpoint -> checkpoints/showcase*.pt

1. Generates the data (seed 0; the quick start's rooms: 32 px, 32 frames, shared textures 3x larger)
   with 8000 training and 50 held-out scenes under OUT/data, unless they are there already. The 50
   held-out scenes are the quick start's own held-out scenes (same settings, same seed).
2. Trains configs/showcase.yaml into OUT/checkpoints, logging held-out PSNR (2 input views, 50
   scenes) every 1000 steps to OUT/checkpoints/metrics.jsonl. Stopped (Ctrl-C, kill, a closed
   session), it checkpoints; run it again and it resumes where it stopped, step for step.
   `--continue_shipped` starts from the shipped training state (checkpoints/showcase_state.pt)
   instead of from scratch, to train the shipped model further on another machine.
3. `--export` writes the newest checkpoint in OUT/checkpoints as the shipped model:
   checkpoints/showcase.pt (fp32 weights, config, data settings, step, training seconds; the
   released name `showcase`) and checkpoints/showcase_state.pt (the trainer's whole checkpoint:
   optimizer, schedule and RNG states, for `--continue_shipped`). Every export replaces the last.
   scripts/showcase_report.py then measures it and writes checkpoints/showcase.json and docs/.
"""

import argparse
import json
import os
import shutil
from pathlib import Path

from configs.released import SHIPPED_DIR
from configs.schema import load_config
from data import synthetic
from data.scene_format import read_scene_list
from scripts.quickstart import DATA_FRAMES, DATA_SIZE, DATA_STYLE
from utils.config import to_dict

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "showcase.yaml"
SHIPPED, STATE = "showcase.pt", "showcase_state.pt"
TRAIN_SCENES, TEST_SCENES, SEED = 8000, 50, 0


def data_settings(train: int = TRAIN_SCENES, test: int = TEST_SCENES) -> dict:
    """What synthetic.generate needs to remake the showcase's scenes (stored in showcase.pt)."""
    return synthetic.settings_of("rooms", train, test, DATA_FRAMES, DATA_SIZE, SEED, DATA_STYLE)


def config(out: Path, overrides=()):
    data = out / "data"
    return load_config(PRESET, [
        f"training.dataset_path={data / 'train' / 'full_list.txt'}",
        f"training.eval_dataset_path={data / 'test' / 'full_list.txt'}",
        f"training.eval_index_path={data / 'test' / 'evaluation_index.json'}",
        f"training.checkpoint_dir={out / 'checkpoints'}", "training.device=cpu", *overrides])


def export(cfg, dest: Path = SHIPPED_DIR) -> Path:
    """The newest checkpoint of the run -> dest/SHIPPED (weights and what it is) and dest/STATE (all of it)."""
    import torch

    from model.checkpoint import checkpoints, read_checkpoint

    found = checkpoints(cfg.training.checkpoint_dir)
    if not found:
        raise SystemExit(f"error: no checkpoint in {cfg.training.checkpoint_dir} to export")
    ckpt = read_checkpoint(found[-1])
    t = cfg.training
    data = data_settings(len(read_scene_list(t.dataset_path)), len(read_scene_list(t.eval_dataset_path)))
    shipped = {"model": ckpt["model"], "config": ckpt["config"], "step": int(ckpt["step"]), "data": data,
               "train_seconds": ckpt.get("train_seconds"), "code_version": ckpt.get("code_version"),
               "image_size": ckpt["image_size"]}
    dest.mkdir(parents=True, exist_ok=True)
    for path, payload in ((dest / SHIPPED, shipped), (dest / STATE, ckpt)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)  # a reader never sees half a file
    print(f"exported step {shipped['step']} of {found[-1]}: " + ", ".join(
        f"{dest / name} ({(dest / name).stat().st_size / 2**20:.1f} MiB)" for name in (SHIPPED, STATE)))
    return dest / SHIPPED


def continue_shipped(cfg, source: Path = SHIPPED_DIR) -> None:
    """Seed an empty checkpoint folder with the shipped training state (a folder with checkpoints resumes its own)."""
    from model.checkpoint import checkpoints, read_checkpoint

    folder, state = Path(cfg.training.checkpoint_dir), source / STATE
    if checkpoints(folder):
        print(f"{folder} holds checkpoints: resuming those, not {state}")
        return
    if not state.is_file():
        raise SystemExit(f"error: --continue_shipped: {state} not found")
    step = int(read_checkpoint(state)["step"])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(state, folder / f"ckpt_{step:08d}.pt")
    print(f"starting from the shipped training state, step {step}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="experiments/showcase", help="data and checkpoints go here")
    parser.add_argument("--export", action="store_true", help="export the newest checkpoint and exit")
    parser.add_argument("--continue_shipped", action="store_true", help="start from checkpoints/showcase_state.pt")
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many more steps")
    parser.add_argument("--scenes", type=int, default=TRAIN_SCENES, help="training scenes to generate")
    parser.add_argument("--test_scenes", type=int, default=TEST_SCENES, help="held-out scenes to generate")
    parser.add_argument("overrides", nargs="*", help="training config overrides, key=value")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cfg = config(out, args.overrides)
    if args.export:
        export(cfg)
        return {}
    counts = synthetic.generate_from_settings(out / "data", data_settings(args.scenes, args.test_scenes))
    print(f"synthetic rooms in {out / 'data'}: {counts['train']} train, {counts['test']} held-out scenes")
    if args.continue_shipped:
        continue_shipped(cfg)
    from training.loop import train  # imports torch and the models
    from utils.distributed import init_distributed

    result = train(cfg, init_distributed("cpu"), to_dict(load_config(PRESET)), max_steps=args.max_steps)
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str))}))
    return result


if __name__ == "__main__":
    main()
