"""Held-out PSNR during training (moves to the evaluation pipeline)."""

import math

import torch

from data.dataset_scene import SceneDataset
from utils.config import ConfigError
from utils.distributed import barrier
from evaluation.scenes import render_scenes
from utils.metrics import psnr


@torch.no_grad()
def evaluate_psnr(run) -> float:
    """Mean per-image PSNR on the first eval_max_scenes held-out scenes (rank 0; nan elsewhere)."""
    cfg, t = run.cfg, run.cfg.training
    value = math.nan
    if run.dist.is_main:
        if not t.eval_dataset_path:
            raise ConfigError("training.eval_every > 0 needs training.eval_dataset_path (a held-out scene list)")
        tok = cfg.model.image_tokenizer
        ds = SceneDataset(t.eval_dataset_path, image_size=tok.image_size, patch_size=tok.patch_size,
                          num_views=t.num_views, num_input_views=t.num_input_views, num_target_views=t.num_target_views,
                          square_crop=t.square_crop, scene_scale_factor=t.scene_scale_factor,
                          min_frame_dist=t.view_selector.min_frame_dist, max_frame_dist=t.view_selector.max_frame_dist,
                          eval_index=t.eval_index_path, seed=t.seed)
        indices = list(range(min(len(ds), t.eval_max_scenes)))
        records = render_scenes(run.model, ds, indices, t.num_input_views, run.dist.device, run.optim.autocast)
        value = torch.cat([psnr(r["render"], r["targets"]) for r in records]).mean().item()
    barrier(run.dist)
    return value
