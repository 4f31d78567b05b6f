"""Train Efficient-LVSM or LVSM from a YAML config, on one process or under torchrun.

    python train.py --config configs/tiny.yaml [key=value ...]
    torchrun --nproc_per_node 8 train.py --config configs/efficient_lvsm_256.yaml training.batch_size_per_gpu=8
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node001:29500 train.py ...
    (on every node, --node_rank 1 on the second; node001:29500 is the first node's address, not localhost)

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
    from torch.distributed import DistError

    from model.checkpoint import CheckpointError  # after the config is known good: imports torch
    from training.loop import train
    try:
        dist = init_distributed(cfg.training.device, cfg.training.dist_timeout_minutes)
    except (ValueError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    try:
        return train(cfg, dist, preset, max_steps=args.max_steps)
    except (ConfigError, OSError, CheckpointError) as err:  # OSError: files, and CheckpointWriteError
        sys.exit(f"error: {err}")
    except RuntimeError as err:  # a collective timed out (gloo raises it from backward as a RuntimeError)
        if not (dist.distributed and (isinstance(err, DistError) or "Timed out" in str(err))):
            raise
        sys.exit(f"error: rank {dist.rank}: the other ranks did not answer within training.dist_timeout_minutes="
                 f"{cfg.training.dist_timeout_minutes} (a rank frozen, killed or out of memory?): "
                 f"{str(err).splitlines()[0] if str(err) else type(err).__name__}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
