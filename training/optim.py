"""Optimizer, learning-rate schedule, and the one helper for mixed precision and the optimizer step.

`OptimStep` owns the autocast context, the fp16 grad scaler, clipping and the skip guard: a step
whose loss or gradient norm is not finite, or whose norm exceeds grad_clip_norm x
allowed_gradnorm_factor (the reference's guard against spikes), is skipped on every rank alike, its
gradients cleared, and counted. Its state (scaler, counters) goes into the checkpoint.

training.nonfinite_steps="reference" takes the reference trainers' rule for non-finite values instead:
the gradients' NaN become 0 and +-inf +-1e-6 (after the fp16 unscale) and the step goes on (clipping,
spike guard); a non-finite loss of the step's last micro-batch holds the update: no optimizer step, no
schedule step, gradients kept (they add to the next step's and are sanitized then).
"""

import math

import torch
import torch.nn as nn

from utils.distributed import DistInfo, agree_any
from utils.precision import AMP_DTYPES, autocast, check_amp_dtype

SCHEDULES = ("constant", "cosine", "linear", "wsd")  # the reference: the first three (transformers')
NONFINITE = ("skip", "reference")  # training.nonfinite_steps


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups as the reference trainers' create_optimizer: trainable parameters in order, decayed
    unless 1-D (norms, biases) or marked `_no_weight_decay`."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim == 1 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(modules: list[nn.Module], training, device: torch.device) -> torch.optim.AdamW:
    t = training
    return torch.optim.AdamW(param_groups(modules, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2),
                             fused=device.type == "cuda")


def lr_factor(step: int, warmup: int, total: int, kind: str, decay_fraction: float = 0.2) -> float:
    """Multiplier of the base lr after `step` scheduler steps, as transformers' get_{constant,cosine,
    linear}_schedule_with_warmup (what both reference trainers use): step / warmup during warmup (so the
    first update has lr 0), then 1, half a cosine to 0 at `total`, or a line to 0 at `total`.
    "wsd" (warmup, stable, decay; not in the reference): 1 until the last `decay_fraction` of the
    steps, then a line to 0 at `total`; a run's length can change until its decay begins, and the
    steps taken so far are those of a run planned with the new length from the start."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        decay = max(1, round(total * decay_fraction))
        return min(1.0, max(0.0, float(total - step) / float(decay)))
    if kind == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))  # num_cycles=0.5, no clamp


def build_scheduler(optimizer, training, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule over `total_steps` optimizer steps (utils/run_plan.plan_run)."""
    t = training
    if t.scheduler_type not in SCHEDULES:
        raise ValueError(f"training.scheduler_type: {t.scheduler_type!r} is not one of {list(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, t.warmup, total_steps, t.scheduler_type, t.decay_fraction))


class OptimStep:
    """Autocast, backward and the guarded optimizer step for one or more parameter owners."""

    def __init__(self, training, params: list[torch.Tensor], optimizer, device: torch.device, dist: DistInfo):
        t = training
        check_amp_dtype(t.amp_dtype)
        if t.nonfinite_steps not in NONFINITE:
            raise ValueError(f"training.nonfinite_steps: {t.nonfinite_steps!r} is not one of {list(NONFINITE)}")
        self.sanitize = t.nonfinite_steps == "reference"
        # fp32 on CPU (same code path), and for the reference's amp_dtype fp32 / tf32
        self.enabled = bool(t.use_amp) and device.type == "cuda" and t.amp_dtype in AMP_DTYPES
        self.dtype, self.amp_dtype = AMP_DTYPES.get(t.amp_dtype, torch.float32), t.amp_dtype
        self.device, self.dist, self.params, self.optimizer = device, dist, params, optimizer
        self.clip, self.limit = t.grad_clip_norm, t.grad_clip_norm * t.allowed_gradnorm_factor
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.enabled and self.dtype == torch.float16)
        self.counts = {"applied": 0, "skipped_nonfinite": 0, "skipped_spike": 0}
        self.held = False  # the last step was held (nonfinite_steps="reference"): the schedule stays too

    def autocast(self):
        return autocast(self.device, self.amp_dtype, self.enabled)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, loss: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Clip and apply the accumulated gradients unless the guard trips; clears them (but in the
        reference's hold, see the module docstring: then `held` is true until the next call).

        `loss`: this step's (detached) loss; with nonfinite_steps="reference" the last micro-batch's.
        Returns (applied, grad norm before clipping)."""
        self.held = False
        if self.sanitize and not agree_any(~torch.isfinite(loss.detach()).reshape(1), self.dist)[0]:
            self.scaler.unscale_(self.optimizer)
            with torch.no_grad():
                for p in self.params:
                    if p.grad is not None:
                        p.grad.nan_to_num_(nan=0.0, posinf=1e-6, neginf=-1e-6)
        elif self.sanitize:  # a non-finite loss: hold, as the reference (nothing stepped, nothing cleared)
            self.held = True
            self.counts["skipped_nonfinite"] += 1
            return False, torch.tensor(float("nan"))
        else:
            self.scaler.unscale_(self.optimizer)
        norm = nn.utils.clip_grad_norm_(self.params, self.clip if self.clip > 0 else float("inf"))
        nonfinite = ~(torch.isfinite(norm) & torch.isfinite(loss))
        spike = torch.isfinite(norm) & (norm > self.limit) if self.clip > 0 else torch.zeros_like(nonfinite)
        # One host sync per step; every rank acts on the same verdict.
        skip_nonfinite, skip_spike = agree_any(torch.stack([nonfinite, spike]), self.dist)
        skip_spike = skip_spike and not skip_nonfinite
        if skip_nonfinite or skip_spike:
            self.counts["skipped_nonfinite" if skip_nonfinite else "skipped_spike"] += 1
            self.scaler.update()  # fp16: unscale_ recorded any inf, so the scale backs off; else a no-op
            self.optimizer.zero_grad(set_to_none=True)
            return False, norm.detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.counts["applied"] += 1
        return True, norm.detach()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict(), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state["scaler"])
        self.counts = dict(state["counts"])
