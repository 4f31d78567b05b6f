"""Evaluate a checkpoint with the papers' protocol: metrics, per-scene tables, an HTML gallery, videos.

    python inference.py --config configs/efficient_lvsm_256.yaml inference.checkpoint_dir=ckpt.pt \\
        training.dataset_path=data/re10k/test/full_list.txt inference_out_dir=outputs/eval
    python inference.py --checkpoint efficient_lvsm_res256 training.dataset_path=... inference_out_dir=...
    torchrun --nproc_per_node 4 inference.py --config ... (same; each scene is scored once)

The reference's evaluation overrides (its scripts/eval.sh) are accepted as written; those that have
no effect here are named in a warning at start. Outputs under inference_out_dir: summary.json
(protocol header and means), per_image.csv/json, per_scene.csv/json, index.html, config.yaml (the
resolved config) and, with inference.render_video, videos/. A bar shows scenes done, rate and time left.
"""

import argparse
import sys

import yaml

from configs.released import ReleasedCheckpointError, resolve_checkpoint
from configs.schema import inert_key_warnings, load_config
from utils.config import ConfigError
from utils.distributed import cleanup, init_distributed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="YAML preset of the checkpoint's model (default for a "
                        "released name: its preset)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file or released name (configs/released.py, "
                        "e.g. efficient_lvsm_res256: downloaded into the Hugging Face cache); sets "
                        "inference.checkpoint_dir")
    parser.add_argument("overrides", nargs="*", help="key=value (the reference's `key = value` also works)")
    args = parser.parse_args(argv)
    overrides, config = list(args.overrides), args.config
    try:
        if args.checkpoint is not None:
            path, preset = resolve_checkpoint(args.checkpoint)
            config = config or preset
            overrides.append(f"inference.checkpoint_dir={path}")
            print(f"checkpoint {path}" + (f" (released {args.checkpoint}), config {config}" if preset else ""))
        if config is None:
            raise ConfigError("--config is required (a released --checkpoint name brings its own)")
        cfg = load_config(config, overrides)
    except (ConfigError, FileNotFoundError, yaml.YAMLError, ReleasedCheckpointError) as err:
        sys.exit(f"error: {err}")
    from evaluation.protocol import run_evaluation
    from model.checkpoint import CheckpointError  # after the config is known good: imports torch
    try:
        dist = init_distributed(cfg.training.device, cfg.training.dist_timeout_minutes)
    except (ValueError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    if dist.is_main:
        for line in inert_key_warnings(cfg):  # keys accepted only so the authors' files load
            print(line)
    try:
        summary = run_evaluation(cfg, dist)
    except (ConfigError, OSError, CheckpointError) as err:  # OSError: e.g. an unwritable output folder
        sys.exit(f"error: {err}")
    finally:
        cleanup()
    if summary is not None:
        means = ", ".join(f"{m.upper()} {summary[m]:.4f}" for m in ("psnr", "ssim", "lpips") if summary[m] is not None)
        print(f"{summary['scenes']} scenes, {summary['images']} images: {means}; counts {summary['counts']}")
        if summary["lpips_status"] != "available":
            print(f"LPIPS {summary['lpips_status']}")
        out = cfg.inference_out_dir or cfg.inference.inference_out_dir
        print(f"summary.json, per-image and per-scene tables, index.html and the resolved config.yaml are in {out}")
    return summary


if __name__ == "__main__":
    main()
