"""A model ready to render from a checkpoint, with the config it was trained with (for the tools
that take a checkpoint: the demo, the pose check, the own-photos command)."""

from pathlib import Path
from typing import Optional

import torch

from configs.released import resolve_checkpoint
from configs.schema import config_from_dict, load_config
from model import build_model, load_weights, read_checkpoint


def load_model(checkpoint: Optional[str | Path], config: Optional[str | Path] = None,
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, object, Optional[dict]]:
    """(model in eval mode on device, config, checkpoint dict). `checkpoint` is a file or a released
    name (configs/released.py: downloaded into the Hugging Face cache, its preset the default config).
    The config is `config` (YAML) if given, else the released preset, else the one the checkpoint
    holds. Without a checkpoint the model keeps its random init (smoke tests of the UI and of costs)
    and the checkpoint dict is None."""
    if checkpoint is not None:
        checkpoint, preset = resolve_checkpoint(checkpoint)
        config = config if config is not None else preset
    ckpt = read_checkpoint(checkpoint) if checkpoint is not None else None
    if config is not None:
        cfg = load_config(config)
    elif ckpt is not None and isinstance(ckpt.get("config"), dict):
        cfg = config_from_dict(ckpt["config"], where=f"{checkpoint}: stored config")
    else:
        raise ValueError(f"no config: {checkpoint or 'no checkpoint given'} holds no 'config'; pass --config "
                         "with the YAML it was trained with")
    model = build_model(cfg.model)
    if ckpt is not None:
        load_weights(model, ckpt, name=str(checkpoint))
    return model.to(device).eval(), cfg, ckpt
