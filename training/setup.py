"""What the training loop needs around it: the resume source, REPA, the start report, held-out PSNR."""

import math
import sys
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from data.dataset_scene import SceneDataset
from model.checkpoint import CheckpointError, read_checkpoint
from configs.schema import inert_key_warnings
from utils.config import ConfigError, to_dict
from utils.distributed import barrier
from evaluation.scenes import render_scenes
from utils.metrics import psnr
from training.checkpoints import REQUIRED


def resume_source(training, load_latest) -> Optional[tuple[dict, Path]]:
    """The checkpoint a run starts from, or None.

    training.resume: "auto" (newest readable checkpoint in checkpoint_dir), "none", or a file holding a
    full training state. The reference's training.resume_ckpt (a file, or a folder whose newest
    checkpoint is taken) replaces checkpoint_dir as the place to resume from. With
    training.reset_training_state only the weights are taken (the caller checks), so any checkpoint
    with a model will do, the reference's included."""
    t = training
    if t.resume_ckpt and t.resume != "auto":
        raise ConfigError(f"training.resume_ckpt={t.resume_ckpt!r} and training.resume={t.resume!r} both name "
                          "where to resume from: set one")
    if t.resume == "none":
        return None
    where, key = (t.resume_ckpt, "training.resume_ckpt") if t.resume_ckpt else (t.resume, "training.resume")
    if where == "auto" or Path(where).is_dir():
        folder = t.checkpoint_dir if where == "auto" else where
        found = load_latest(folder)
        others = sorted(p.name for p in Path(folder).glob("*.pt")) if Path(folder).is_dir() else []
        if found is None and others and where != "auto":
            raise CheckpointError(f"{key}={where}: no checkpoint of this trainer there ({', '.join(others[:5])} are "
                                  "not ckpt_<step>.pt files); name one file to start from its weights, with "
                                  "training.reset_training_state=true")
        return found
    path = Path(where)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: checkpoint not found: {path}")
    ckpt = read_checkpoint(path)
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing and not t.reset_training_state:
        raise CheckpointError(f"{key}={path}: not a training checkpoint of this trainer (missing {missing}), so its "
                              "optimizer and schedule cannot be resumed; to start from its weights, set "
                              "training.reset_training_state=true (or use training.init_checkpoint)")
    return ckpt, path


def build_repa(cfg, model: torch.nn.Module, device: torch.device):
    """REPA's aligner (projectors and frozen teacher) when training.enable_repa, else None."""
    if not cfg.training.enable_repa:
        return None
    from training.repa import build_aligner
    return build_aligner(cfg, model).to(device)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def start_report(cfg, run, preset: Optional[dict]) -> str:
    """Effective batch, tokens per step, parameters, and the config's differences from the preset."""
    t, tok, dist = cfg.training, cfg.model.image_tokenizer, run.dist
    effective = t.batch_size_per_gpu * dist.world_size * t.grad_accum_steps
    n = (tok.image_size // tok.patch_size) ** 2  # tokens per view, square images
    views = (t.view_max if t.use_view_masking else t.num_input_views) + t.num_target_views  # at most, per sample
    params = sum(p.numel() for p in run.model.parameters())
    lines = [f"model {cfg.model.class_name}: {params / 1e6:.2f}M parameters"
             + (f" + REPA projectors {sum(p.numel() for p in run.repa.parameters() if p.requires_grad) / 1e6:.2f}M"
                if run.repa is not None else ""),
             f"device {dist.device} x {dist.world_size} process(es); amp {'on (' + t.amp_dtype + ')' if run.optim.enabled else 'off'}; "
             f"compile {t.use_compile}; gradient checkpointing {t.gradient_checkpoint}",
             f"effective batch {effective} = {t.batch_size_per_gpu} per process x {dist.world_size} x "
             f"{t.grad_accum_steps} accumulation; tokens per step {effective * views * n:,} "
             f"({views} views x {n} tokens per sample, at most)",
             f"data: {len(run.dataset)} scenes from {t.dataset_path}, {run.sampler.batches_per_epoch} batches per "
             f"epoch per process; steps {run.step} -> {run.plan.total_steps}; checkpoints in {t.checkpoint_dir}",
             run.plan.description]
    lines += [f"warning: {item} has no effect" for item in run.plan.ignored] + inert_key_warnings(cfg)
    if preset is not None:
        now, before = _flatten(to_dict(cfg)), _flatten(preset)
        diff = [f"  {k}: {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
        lines.append("config differs from the preset in:" if diff else "config: the preset unchanged")
        lines += diff
    return "\n".join(lines)


def progress(run, end: int) -> tqdm:
    interactive = sys.stderr.isatty()  # a log file gets a line every 30 s, not every step
    return tqdm(total=end, initial=run.step, desc="train", unit="step", disable=not run.dist.is_main,
                dynamic_ncols=True, mininterval=0.1 if interactive else 30.0)


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
