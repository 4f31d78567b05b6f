"""The training loop: one process on a CPU or GPU, or DDP under torchrun.

Every source of randomness is a function of (seed, step, rank) or (seed, epoch, index): the data
order (data.sampler), the frames of each sample (the datasets), the input-view count and the target
choice. With model, optimizer, schedule and scaler restored from a checkpoint, a resumed run
therefore takes exactly the steps an uninterrupted one would.
"""

import contextlib
import math
import signal
import time
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from configs.schema import config_from_dict
from data.dataset_scene import collate, split_views
from data.factory import build_dataset, input_views_for_step
from data.sampler import ResumableSampler
from evaluation.protocol import evaluate_scenes
from model import build_model, load_weights
from model.checkpoint import CheckpointError
from training.checkpoints import (RunLock, check_room, checkpoint_bytes, checkpoints, code_version,
                                  remove_stale_temps, resume_source, rng_state, save_checkpoint, set_rng_state)
from training.log import TrainLog, backup_code, progress, start_report
from training.losses import RenderLoss
from training.optim import OptimStep, build_optimizer, build_scheduler
from training.reference_ckpt import is_reference_training, projector_state, schedule_note, training_state
from training.repa import build_aligner
from training.run_plan import RunPlan, num_views, plan_run
from utils.config import ConfigError, to_dict
from utils.distributed import DistInfo, agree_any, all_reduce_mean, barrier
from utils.precision import allow_tf32


class Trainee(nn.Module):
    """The model plus REPA's projectors: one module, so DDP averages all their gradients."""

    def __init__(self, model: nn.Module, repa: Optional[nn.Module]):
        super().__init__()
        self.model, self.repa = model, repa

    def forward(self, inputs: dict, targets: dict) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.model(inputs["image"], inputs["c2w"], inputs["fxfycxcy"], targets["c2w"], targets["fxfycxcy"])
        aux = self.repa.loss(inputs["image"], targets["image"]) if self.repa is not None else pred.new_zeros(())
        return pred, aux  # [b, v_t, 3, h, w], scalar


@dataclass
class Run:
    cfg: object
    dist: DistInfo
    model: nn.Module  # the bare renderer: its state dict is what checkpoints hold
    trainee: nn.Module  # what the step runs: DDP- and compile-wrapped as configured
    repa: Optional[nn.Module]
    loss: RenderLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    optim: OptimStep
    dataset: torch.utils.data.Dataset
    sampler: ResumableSampler
    log: TrainLog
    plan: RunPlan
    step: int = 0
    skipped_scenes: int = 0  # this rank's, since this process started
    seconds_before: float = 0.0  # training seconds of the run before this process (from the checkpoint)
    started: float = 0.0  # when this process's training began (time.time())
    eval_seconds: float = 0.0  # this process's held-out evaluations: not training time
    lock: Optional[RunLock] = None  # rank 0: the checkpoint folder's lock, held while the run lives

    def train_seconds(self) -> float:
        """Training wall time of the whole run so far, resumes summed, held-out evaluations excluded."""
        return self.seconds_before + time.time() - self.started - self.eval_seconds


def setup(cfg, dist: DistInfo, preset: Optional[dict] = None) -> Run:
    t = cfg.training
    torch.manual_seed(t.seed + dist.rank)
    allow_tf32(dist.device, t.use_tf32)
    dataset = build_dataset(cfg, num_views=num_views(cfg))  # errors name a missing list or a bad view count
    plan = plan_run(cfg, len(dataset), dist.world_size)  # the family's run length, time limit and save points
    model = build_model(cfg.model).to(dist.device)
    model.grad_checkpoint_every = t.grad_checkpoint_every if t.gradient_checkpoint else 0
    repa = build_aligner(cfg, model).to(dist.device) if t.enable_repa else None  # projectors + frozen teacher
    loss, optimizer, scheduler, optim = optimization(cfg, dist, model, repa, plan.total_steps)
    owners = [model] + ([repa] if repa is not None else [])
    sampler = ResumableSampler(len(dataset), t.batch_size_per_gpu, dist.rank, dist.world_size, t.seed)
    lock = None
    if dist.is_main:  # model + AdamW's two moments (+ REPA's projectors): fail now, not at the first save
        check_room(t.checkpoint_dir, checkpoint_bytes(owners))
        lock = RunLock(t.checkpoint_dir).acquire()  # one run per folder: before anything in it is touched
    log = TrainLog(t.checkpoint_dir, t, to_dict(cfg), enabled=dist.is_main)
    if t.backup_code and dist.is_main:
        backup_code(t.checkpoint_dir)
    run = Run(cfg, dist, model, None, repa, loss, optimizer, scheduler, optim, dataset, sampler, log, plan, lock=lock)
    note = init_or_resume_note(t) if dist.is_main else None
    if note:
        print(note)
    restore(run)
    dropped = run.log.drop_after(run.step)  # a run killed after logging past its last checkpoint
    if dropped:
        print(f"{run.log.metrics_path}: moved {dropped} line(s) after step {run.step} (logged by a previous run after "
              f"the checkpoint this run starts from) to {run.log.dropped_path}; those steps are taken again")
    trainee = Trainee(torch.compile(model) if t.use_compile else model, repa).train()  # reaches REPA's teacher
    run.trainee = DistributedDataParallel(trainee) if dist.distributed else trainee
    if dist.is_main:
        print(start_report(cfg, run, preset))
    return run


def optimization(cfg, dist: DistInfo, model: nn.Module, repa: Optional[nn.Module], total_steps: int):
    """What an update needs beside the model: (loss, AdamW with its parameter groups, the schedule over
    total_steps, OptimStep: autocast, clipping, the skip guard). setup() and scripts/check_training.py
    build it here, so the reference check runs the trainer's own parts."""
    t = cfg.training
    loss = RenderLoss(t).to(dist.device)
    owners = [model] + ([repa] if repa is not None else [])
    optimizer = build_optimizer(owners, t, dist.device)
    scheduler = build_scheduler(optimizer, t, total_steps)
    optim = OptimStep(t, [p for m in owners for p in m.parameters() if p.requires_grad], optimizer, dist.device, dist)
    return loss, optimizer, scheduler, optim


def init_or_resume_note(t) -> Optional[str]:
    """training.init_checkpoint together with a checkpoint to resume from: the start line that says
    resuming wins (init_checkpoint is read only when no checkpoint is resumed), or None."""
    if not t.init_checkpoint or t.resume == "none":
        return None
    if t.resume_ckpt or t.resume != "auto":
        key, where = ("training.resume_ckpt", t.resume_ckpt) if t.resume_ckpt else ("training.resume", t.resume)
        found = f"{key}={where}"
    else:
        present = checkpoints(t.checkpoint_dir)
        if not present:
            return None
        found = (f"training.resume=auto and {t.checkpoint_dir} holds {len(present)} checkpoint(s), the newest "
                 f"{present[-1].name}")
    return (f"warning: training.init_checkpoint={t.init_checkpoint} is not used: {found}, and resuming wins; set "
            "training.resume=none (and an empty training.resume_ckpt) to start from init_checkpoint instead")


def restore(run: Run) -> None:
    """Resume (training.resume) or start from init_checkpoint weights; a mismatch names the file.
    Checkpoints of the reference's train.py resume too: their REPA projectors, optimizer (re-indexed
    by parameter name), schedule and step (training/reference_ckpt.py)."""
    t = run.cfg.training
    if run.dist.is_main:
        for path in remove_stale_temps(t.checkpoint_dir):
            print(f"removed {path}, a checkpoint write that a killed run left unfinished")
    barrier(run.dist)
    source = resume_source(t, run.dist)  # rank 0 chooses; every rank reads that one file
    if source is None:
        if t.init_checkpoint:
            ckpt = load_weights(run.model, t.init_checkpoint)
            note = start_projectors(run, ckpt, t.init_checkpoint)
            if run.dist.is_main:
                print(f"initialized the model from {t.init_checkpoint}" + note)
        return
    ckpt, path = source
    load_weights(run.model, ckpt, name=str(path))
    if t.reset_training_state:  # the reference's: weights only; optimizer, schedule and step start afresh
        note = start_projectors(run, ckpt, path)
        if run.dist.is_main:
            print(f"took the weights of {path}; training state reset (training.reset_training_state=true)" + note)
        return
    projectors = projector_state(ckpt, run.repa, str(path)) if run.repa is not None else None
    if run.repa is not None and projectors is None:
        raise CheckpointError(f"{path} holds no REPA projectors, but training.enable_repa=true: its optimizer state "
                              "has no place for theirs; resume with training.enable_repa=false, or set "
                              "training.reset_training_state=true to start the projectors and the optimizer afresh")
    if projectors is not None:
        run.repa.load_state_dict(projectors)
    state = ckpt
    if is_reference_training(ckpt):
        state = training_state(ckpt, run.model, run.repa, run.optimizer, t.grad_accum_steps, str(path))
        state["optim_step"] = {**run.optim.state_dict(), "counts": {**run.optim.counts, "applied": state["applied"]}}
    elif run.repa is None and ckpt.get("repa") is not None:
        raise CheckpointError(f"{path} was trained with REPA (it holds projectors and their optimizer state): resume "
                              "it with training.enable_repa=true, or set training.reset_training_state=true")
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.optim.load_state_dict(state["optim_step"])
    if "rng" in state:  # the reference stores none: the run draws on from the seeded start
        set_rng_state(state["rng"])
    run.step = int(state["step"])
    run.seconds_before = float(ckpt.get("train_seconds", 0.0))  # absent from checkpoints before it was kept
    if run.dist.is_main:
        print(f"resumed from {path} at step {run.step}" + (" (a checkpoint of the reference's train.py)"
                                                           if state is not ckpt else ""))
        for line in state.get("notes", []) + ([schedule_note(run.scheduler, str(path))] if state is not ckpt else []):
            if line:
                print(line)


def start_projectors(run: Run, ckpt: dict, source) -> str:
    """Weights-only starts (init_checkpoint, reset_training_state): REPA's projectors are taken from the
    checkpoint where it has those of this config (ours or the reference's), as the reference's
    non-strict load takes them. Returns what happened, for the start line."""
    if run.repa is None:
        return ""
    try:
        projectors = projector_state(ckpt, run.repa, str(source))
    except CheckpointError as err:
        return f"; REPA projectors start afresh ({err})"
    if projectors is None:
        return "; REPA projectors start afresh (the checkpoint has none)"
    run.repa.load_state_dict(projectors)
    return "; REPA projectors taken from it"


def checkpoint(run: Run) -> None:
    t = run.cfg.training
    if run.dist.is_main:
        payload = {"model": run.model.state_dict(), "repa": run.repa.state_dict() if run.repa is not None else None,
                   "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                   "optim_step": run.optim.state_dict(), "step": run.step, "rng": rng_state(),
                   "config": to_dict(run.cfg), "image_size": run.cfg.model.image_tokenizer.image_size,
                   "code_version": code_version(), "train_seconds": run.train_seconds()}
        save_checkpoint(t.checkpoint_dir, run.step, payload, t.keep_checkpoints)
    barrier(run.dist)


def micro_batches(run: Run, start: int) -> Iterator[dict]:
    """Micro-batches from global micro-batch index `start` on, epoch after epoch."""
    t, per_epoch = run.cfg.training, run.sampler.batches_per_epoch
    epoch, position = divmod(start, per_epoch)
    while True:
        run.dataset.set_epoch(epoch)
        run.sampler.set_position(epoch, position)
        loader = torch.utils.data.DataLoader(
            run.dataset, batch_size=t.batch_size_per_gpu, sampler=run.sampler, num_workers=t.num_workers,
            collate_fn=collate, drop_last=True, pin_memory=run.dist.device.type == "cuda",
            prefetch_factor=t.prefetch_factor if t.num_workers > 0 else None,
            # its own generator: starting a loader draws no number from the global RNG, whose state the
            # checkpoint stores, so a resumed run's stored states equal an uninterrupted run's
            generator=torch.Generator().manual_seed((t.seed * 1_000_003 + epoch) * 1009 + run.dist.rank))
        yield from loader
        epoch, position = epoch + 1, 0


def train_step(run: Run, batches: Iterator[dict]) -> dict:
    """One optimizer step over grad_accum_steps micro-batches of `batches`, split into inputs and
    targets (the step's input-view count; targets drawn from (seed, step, micro-batch, rank))."""
    t = run.cfg.training
    n_in = input_views_for_step(t, run.step)

    def splits() -> Iterator[tuple[dict, dict]]:  # lazily: one micro-batch in memory at a time
        for micro in range(t.grad_accum_steps):
            batch = next(batches)
            run.skipped_scenes += len(batch["skipped"])
            g = torch.Generator().manual_seed((t.seed * 1_000_003 + run.step) * 1009 + micro * 31 + run.dist.rank)
            yield split_views(batch, n_in, t.num_target_views, t.target_has_input, generator=g)
    return update(run, splits())


def update(run: Run, pairs: Iterator[tuple[dict, dict]]) -> dict:
    """One optimizer step from grad_accum_steps (inputs, targets) micro-batches: forward, loss,
    backward of loss / grad_accum_steps, then OptimStep (clip, skip guard, AdamW) and the schedule.
    Returns detached metrics (means over the micro-batches; each one's parts in "micro")."""
    t, dev = run.cfg.training, run.dist.device
    totals, per_micro = {}, []
    for micro, (inputs, targets) in enumerate(pairs):
        inputs, targets = ({k: v.to(dev, non_blocking=True) for k, v in d.items()} for d in (inputs, targets))
        last = micro == t.grad_accum_steps - 1
        sync = run.trainee.no_sync() if run.dist.distributed and not last else contextlib.nullcontext()
        with sync:
            with run.optim.autocast():
                pred, aux = run.trainee(inputs, targets)
                loss, parts = run.loss(pred, targets["image"])
                loss = loss + t.proj_loss_weight * aux if run.repa is not None else loss
            run.optim.backward(loss / t.grad_accum_steps)
        parts = {**parts, "loss": loss.detach(), **({"repa": aux.detach()} if run.repa is not None else {})}
        per_micro.append(parts)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v.float() / t.grad_accum_steps
    lr = run.optimizer.param_groups[0]["lr"]  # the rate this step applies (0 at step 0: warmup from 0)
    # the reference checks the loss of the forward pass that ends the step (nonfinite_steps="reference")
    applied, norm = run.optim.step(per_micro[-1]["loss"] if run.optim.sanitize else totals["loss"])
    if not run.optim.held:
        with warnings.catch_warnings():  # torch's note when no update was applied yet (skipped): the schedule
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")  # counts steps, as theirs
            run.scheduler.step()
    run.step += 1
    last_views = (inputs["image"], targets["image"], pred.detach())
    return {**totals, "grad_norm": norm, "applied": applied, "views": last_views, "lr": lr, "micro": per_micro}


def train(cfg, dist: DistInfo, preset: Optional[dict] = None, max_steps: Optional[int] = None) -> dict:
    """Train until training.train_steps (or max_steps more steps, or train_time hours); checkpoint
    on schedule, at the end, on SIGTERM/SIGINT and on the time limit. Returns the last metrics."""
    run = setup(cfg, dist, preset)
    t = cfg.training
    stop = {"signal": None}
    old = {s: signal.signal(s, lambda num, _: stop.update(signal=num)) for s in (signal.SIGTERM, signal.SIGINT)}
    plan = run.plan
    end = plan.total_steps if max_steps is None else min(plan.total_steps, run.step + max_steps)
    deadline = time.time() + plan.time_limit_s if plan.time_limit_s else None
    last_save = time.time()
    batches = micro_batches(run, run.step * t.grad_accum_steps)
    bar, last, window = progress(run, end), {}, (run.step, time.time())
    run.started = time.time()
    try:
        while run.step < end:
            out = run_guarded(run, batches)
            last = log_step(run, out, bar, window)
            if last.get("logged"):
                window = (run.step, time.time())
            now = time.time()
            late = deadline is not None and now > deadline
            save_time = plan.save_every_s is not None and now - last_save >= plan.save_every_s
            timed_out, interrupted, save_time = agree_any(
                torch.tensor([late, stop["signal"] is not None, save_time]), dist)  # one verdict for every rank
            if plan.save_due(run.step, t.grad_accum_steps) or save_time or run.step == end or timed_out or interrupted:
                checkpoint(run)
                last_save = time.time()
            if t.eval_every and (run.step % t.eval_every == 0 or run.step == end or timed_out or interrupted):
                eval_started, seconds = time.time(), run.train_seconds()
                last["eval_psnr"] = heldout_psnr(run)
                run.log.metrics(run.step, {"eval_psnr": last["eval_psnr"], "train_seconds": seconds})
                run.eval_seconds += time.time() - eval_started
            if timed_out or interrupted:
                print(f"stopping at step {run.step}: " + ("time limit" if timed_out else "signal"))
                break
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        bar.close()
        run.log.close()
        if run.lock is not None:
            run.lock.release()
    return {**last, "step": run.step, "counts": dict(run.optim.counts)}


def run_guarded(run: Run, batches) -> dict:
    """train_step, turning an out-of-memory first step into a message that names the settings."""
    try:
        return train_step(run, batches)
    except torch.OutOfMemoryError as err:
        t, tok = run.cfg.training, run.cfg.model.image_tokenizer
        raise RuntimeError(
            f"out of memory at step {run.step} with batch_size_per_gpu={t.batch_size_per_gpu}, image_size="
            f"{tok.image_size}, num_views={t.num_views}: lower the batch size (raise grad_accum_steps to keep "
            "the effective batch), or set training.gradient_checkpoint=true; checkpoints already written are "
            "untouched") from err


def log_step(run: Run, out: dict, bar, window: tuple[int, float]) -> dict:
    """Progress bar every step; metrics (one host sync) every print_every steps, at skips, and every
    wandb_log_every steps (those also go to wandb, as the reference logs them)."""
    t = run.cfg.training
    bar.update(1)
    if t.vis_every and run.step % t.vis_every == 0:
        run.log.images(run.step, *out["views"])
    to_wandb = run.step % t.wandb_log_every == 0  # a function of the step: every rank reduces alike
    if run.step % t.print_every and out["applied"] and not to_wandb:
        return {}
    values = {k: all_reduce_mean(out[k].detach(), run.dist).item() for k in ("loss", "l2", "psnr", "grad_norm")}
    values.update({k: all_reduce_mean(out[k], run.dist).item() for k in ("perceptual", "repa") if k in out})
    steps, seconds = run.step - window[0], time.time() - window[1]
    values.update(lr=out["lr"], steps_per_s=steps / max(seconds, 1e-9), train_seconds=run.train_seconds(),
                  **{f"steps_{k}": v for k, v in run.optim.counts.items()})
    # Scenes that failed to load and were replaced, over all ranks since this process started.
    skipped = all_reduce_mean(torch.tensor(float(run.skipped_scenes)), run.dist) * run.dist.world_size
    values["skipped_scenes"] = int(round(skipped.item()))
    if not out["applied"]:
        print(f"step {run.step}: update skipped (loss {values['loss']:.4g}, grad norm {values['grad_norm']:.4g}); "
              f"counts {run.optim.counts}")
    bar.set_postfix(loss=f"{values['loss']:.4f}", psnr=f"{values['psnr']:.2f}", lr=f"{values['lr']:.2e}",
                    refresh=False)
    run.log.metrics(run.step, values, to_wandb=to_wandb)
    return {**values, "logged": True}


@torch.no_grad()
def heldout_psnr(run: Run) -> float:
    """Mean per-image PSNR on the first eval_max_scenes held-out scenes, through the evaluation
    pipeline, from eval_input_views input views (rank 0; nan elsewhere)."""
    cfg, t = run.cfg, run.cfg.training
    if t.eval_input_views is not None:  # e.g. 2 inputs while training draws 2 to 6 (use_view_masking)
        cfg = config_from_dict(to_dict(cfg), [f"training.num_input_views={t.eval_input_views}"])
    value = math.nan
    if run.dist.is_main:
        if not t.eval_dataset_path:
            raise ConfigError("training.eval_every > 0 needs training.eval_dataset_path (a held-out scene list)")
        dataset = build_dataset(cfg, t.eval_dataset_path, eval_index=t.eval_index_path)
        rows = evaluate_scenes(cfg, run.model, dataset, list(range(min(len(dataset), t.eval_max_scenes))),
                               run.dist.device, run.optim.autocast)
        value = sum(r["psnr"] for r in rows) / max(1, len(rows))
    barrier(run.dist)
    return value
