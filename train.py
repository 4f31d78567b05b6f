"""Train Efficient-LVSM or LVSM from a YAML config, on one process or under torchrun.

    python train.py --config configs/tiny.yaml [key=value ...]
    torchrun --nproc_per_node 8 train.py --config configs/efficient_lvsm_256.yaml training.batch_size_per_gpu=8

Rank 0 logs (tqdm, checkpoint_dir/metrics.jsonl, wandb when configured) and writes checkpoints;
`training.resume=auto` (the default) continues from the newest readable checkpoint.
"""

import argparse
import sys

import yaml

from configs.schema import load_config
from utils.config import ConfigError, to_dict
from utils.distributed import cleanup, init_distributed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML preset, e.g. configs/tiny.yaml")
    parser.add_argument("--max_steps", type=int, default=None, help="stop after this many more steps")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. training.lr=1e-4")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        preset = to_dict(load_config(args.config))
    except (ConfigError, FileNotFoundError, yaml.YAMLError) as err:
        sys.exit(f"error: {err}")
    from model.checkpoint import CheckpointError  # after the config is known good: imports torch
    from training.loop import train
    dist = init_distributed(cfg.training.device)
    try:
        return train(cfg, dist, preset, max_steps=args.max_steps)
    except (ConfigError, FileNotFoundError, CheckpointError) as err:
        sys.exit(f"error: {err}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
