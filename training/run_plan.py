"""How long a run is, how many views a sample holds, and when it saves: the reference trainers' rules.

Each model family's reference trainer has its own rules, and a config of that family gets them, so
that the authors' YAML files train what the authors' code would:

- LVSM (Haian-Jin/LVSM `train.py`): `train_steps` optimizer steps; a checkpoint every
  `checkpoint_every` forward passes (optimizer steps without accumulation; with it, the update that
  holds every `checkpoint_every`-th forward pass); `num_views` as configured. It reads neither `train_epochs` nor the
  time keys; we honour `train_time` and `checkpoint_every_time` when a config sets them (a safety
  net the reference lacks; its own YAMLs set neither).
- Efficient-LVSM (Ayakaee/Efficient-LVSM `train.py`): `num_views = num_input_views +
  num_target_views`; the run length comes from `train_epochs`,
  `int(train_epochs * dataset_len // effective_batch)` optimizer steps, cut by `train_time` hours
  (12 when unset); checkpoints every `int(dataset_len * checkpoint_every_epoch // effective_batch) + 1`
  forward passes and every `checkpoint_every_time` hours (1 when unset). Its trainer never reads
  `train_steps`; we fall back to it only when `train_epochs` is unset (our presets for CPU runs).

Differences kept on purpose (README, "Coming from LVSM or Efficient-LVSM"): both reference loops
run while `step <= total`, one forward pass more than the schedule's length (with accumulation, an
update on a single micro-batch); we take exactly `total` optimizer steps. Their time-based saves
use the same clock; ours are agreed across ranks before any rank writes.
"""

from dataclasses import dataclass, field
from typing import Optional

from configs.schema import TrainingConfig
from model.registry import resolve_model_name
from utils.config import ConfigError

FAMILIES = {"efficient_lvsm": "efficient_lvsm", "lvsm_decoder_only": "lvsm", "lvsm_encoder_decoder": "lvsm"}
# Efficient-LVSM train.py: `config.training.get("train_time", 12)`, `get("checkpoint_every_time", 1.0)`.
EFFICIENT_DEFAULT_TRAIN_HOURS = 12.0
EFFICIENT_DEFAULT_SAVE_HOURS = 1.0


def family(cfg) -> str:
    """'efficient_lvsm' or 'lvsm': whose trainer rules a config follows (from model.class_name)."""
    return FAMILIES[resolve_model_name(cfg.model.class_name)]


def num_views(cfg) -> int:
    """Frames per training sample: Efficient-LVSM overrides training.num_views with inputs + targets."""
    t = cfg.training
    return t.num_input_views + t.num_target_views if family(cfg) == "efficient_lvsm" else t.num_views


@dataclass
class RunPlan:
    total_steps: int  # optimizer steps; also the schedule's horizon
    time_limit_s: Optional[float]  # None: no time limit
    save_every_steps: int  # optimizer steps between checkpoints (0: none by step count)
    save_every_forward: int  # forward passes between checkpoints (Efficient-LVSM by epoch; 0: unused)
    save_every_s: Optional[float]  # seconds between time-based checkpoints (None: none)
    description: str  # the one start line that says how the run length was derived
    ignored: list[str] = field(default_factory=list)  # keys that this family's rules do not read

    def save_due(self, step: int, accum: int) -> bool:
        """Whether the optimizer step that just made `step` completed steps saves by count: every
        save_every_steps steps, or (Efficient-LVSM) when its forward passes crossed a multiple of
        save_every_forward (with accumulation: the step that holds that forward pass)."""
        if self.save_every_forward:
            return (step * accum) // self.save_every_forward > ((step - 1) * accum) // self.save_every_forward
        return bool(self.save_every_steps) and step % self.save_every_steps == 0


def plan_run(cfg, dataset_len: int, world_size: int) -> RunPlan:
    """The run's length, time limit and save points under its family's rules (see the module doc)."""
    t = cfg.training  # its counts were checked above 0 at load (configs/schema.py: check_values)
    effective = t.batch_size_per_gpu * world_size * t.grad_accum_steps
    fam, ignored = family(cfg), []
    hours = t.train_time
    every_hours = t.checkpoint_every_time
    if fam == "efficient_lvsm":
        hours = EFFICIENT_DEFAULT_TRAIN_HOURS if hours is None else hours
        every_hours = EFFICIENT_DEFAULT_SAVE_HOURS if every_hours is None else every_hours
        if t.num_views != t.num_input_views + t.num_target_views:
            ignored.append(f"training.num_views={t.num_views} (Efficient-LVSM uses num_input_views + "
                           f"num_target_views = {t.num_input_views + t.num_target_views})")
    if fam == "efficient_lvsm" and t.train_epochs is not None:
        total = int(t.train_epochs * dataset_len // effective)  # the reference's arithmetic, to the letter
        how = f"train_epochs={t.train_epochs:g} over {dataset_len} scenes at effective batch {effective}"
        if t.train_steps != TrainingConfig.train_steps:
            ignored.append(f"training.train_steps={t.train_steps} (Efficient-LVSM derives the length from train_epochs)")
    else:
        total, how = t.train_steps, f"training.train_steps={t.train_steps}"
        if t.train_epochs is not None:
            ignored.append(f"training.train_epochs={t.train_epochs:g} (the LVSM trainer reads train_steps)")
    if total < 1:
        raise ConfigError(f"the run has {total} steps: {how}; raise training.train_epochs or lower the batch")
    save_forward, save_steps = 0, t.checkpoint_every  # ours and Efficient-LVSM without epochs: steps
    if fam == "lvsm":
        save_forward, save_steps = t.checkpoint_every, 0  # the LVSM trainer counts forward passes
    if fam == "efficient_lvsm" and t.checkpoint_every_epoch is not None:
        save_forward, save_steps = int(dataset_len * t.checkpoint_every_epoch // effective) + 1, 0
    elif t.checkpoint_every_epoch is not None:
        ignored.append(f"training.checkpoint_every_epoch={t.checkpoint_every_epoch:g} (the LVSM trainer saves every "
                       "checkpoint_every steps)")
    line = f"{total} steps: {how}" + (f", capped by train_time={hours:g} h" if hours else ", no time limit")
    if not save_forward:
        saves = f"every {save_steps} steps"
    elif fam == "lvsm":
        saves = f"every {save_forward} forward passes (checkpoint_every)"
    else:
        saves = f"every {save_forward} forward passes (checkpoint_every_epoch={t.checkpoint_every_epoch:g})"
    line += f"; checkpoints {saves}" + (f" and every {every_hours:g} h" if every_hours else "")
    return RunPlan(total, hours * 3600 if hours else None, save_steps, save_forward,
                   every_hours * 3600 if every_hours else None, line, ignored)

