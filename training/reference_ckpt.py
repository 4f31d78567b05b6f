"""The reference trainer's checkpoints, resumed and fine-tuned here: REPA projectors and training state.

The authors' train.py (Ayakaee/Efficient-LVSM; LVSM's is the same) saves

    {"model": Images2LatentScene.state_dict(), "optimizer": AdamW.state_dict(),
     "lr_scheduler": LambdaLR.state_dict(), "fwdbwd_pass_step": forward passes so far,
     "param_update_step": updates applied so far}

as `ckpt_<epoch x 100, %f>.pt` (model.checkpoint.reference_checkpoints) or `ckpt_t<hours>h.pt`.
Beside the renderer's weights, "model" holds `loss_computer.*` (the frozen VGG of the loss),
`repa_encoder.*` (the frozen DINO teacher, whenever model.image_tokenizer.type is dinov2/dinov3; the
teacher here is read from model.image_tokenizer.model_path, so these are passed over) and, with REPA
on, `repa_projector.{input|target}.{T}.{S}.{0,2,4}.{weight,bias}`: the projector that aligns teacher
block T to block S (1-based) of the input encoder / the target decoder (its model/repa_config.py
repa_map), ours `projectors.{input_self_attn_blocks|self_cross_blocks}_{S-1}.*` (training.repa).

Their optimizer state is indexed by position in its two groups, which their create_optimizer builds
from named_parameters() in registration order, trainable ones only (the VGG and the teacher are
frozen): group 0 decayed (every parameter that is not 1-D), group 1 not; ours are built by the same
rule (training.optim.param_groups). The keys of their state dict come in that registration order, so
the file alone says which parameter each index is; `training_state` re-indexes it for our optimizer.
"""

import math
import re
from typing import Any, Optional

import torch
import torch.nn as nn

from model.checkpoint import CheckpointError, strip_wrappers

KEYS = ("model", "optimizer", "lr_scheduler", "fwdbwd_pass_step", "param_update_step")
PROJECTOR = re.compile(r"^repa_projector\.(input|target)\.(\d+)\.(\d+)\.(.+)$")
STREAM_BLOCKS = {"input": "input_self_attn_blocks", "target": "self_cross_blocks"}  # training.repa.align_points
FROZEN = ("loss_computer.", "repa_encoder.")
IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")  # AdamW flags of this machine, not of theirs


def is_reference_training(ckpt: dict) -> bool:
    """Whether `ckpt` is a training checkpoint of the reference's train.py (see the module docstring)."""
    return all(k in ckpt for k in KEYS)


def _projector_keys(ckpt: dict) -> dict[str, str]:
    """{their key (wrappers stripped): the original key} of the projectors in ckpt["model"]."""
    state = ckpt.get("model")
    if not isinstance(state, dict):
        return {}
    return {clean: key for key in state if (clean := strip_wrappers(key)).startswith("repa_projector.")}


def our_projector_key(key: str, teacher_layer: int, source: str) -> str:
    """'repa_projector.target.8.2.0.weight' -> 'projectors.self_cross_blocks_1.0.weight' for a teacher
    aligned at block 8; a projector of another teacher block is a CheckpointError."""
    match = PROJECTOR.match(key)
    if match is None:
        raise CheckpointError(f"{source}: '{key}' is not a projector key of the reference "
                              "(repa_projector.<input|target>.<teacher block>.<student block>.<layer>...)")
    stream, teacher, student, rest = match[1], int(match[2]), int(match[3]), match[4]
    if teacher != teacher_layer:
        raise CheckpointError(f"{source}: its REPA projectors align teacher block {teacher} ({key}); this config "
                              f"aligns teacher block {teacher_layer} (model.repa_config)")
    return f"projectors.{STREAM_BLOCKS[stream]}_{student - 1}.{rest}"


def projector_state(ckpt: dict, aligner: nn.Module, source: str) -> Optional[dict[str, torch.Tensor]]:
    """REPA's projectors in a checkpoint as `aligner`'s state dict: ours (ckpt["repa"]) or the
    reference's (repa_projector.* in ckpt["model"]); None where it holds none. A CheckpointError names
    the keys where they are not the projectors this config builds (other blocks, widths or streams)."""
    if ckpt.get("repa") is not None:
        state = dict(ckpt["repa"])
    else:
        found = _projector_keys(ckpt)
        if not found:
            return None
        state = {our_projector_key(k, aligner.teacher.layer, source): ckpt["model"][orig] for k, orig in found.items()}
    expected = aligner.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: its REPA projectors are not those of this config (model.repa_config, "
                              f"model.projector_dim, model.transformer.d): missing {missing[:6]}, unexpected "
                              f"{unexpected[:6]}, shapes {wrong[:4]}")
    return state


def training_state(ckpt: dict, model: nn.Module, aligner: Optional[nn.Module], optimizer: torch.optim.Optimizer,
                   grad_accum_steps: int, source: str) -> dict[str, Any]:
    """The reference checkpoint's optimizer, schedule and step as our trainer restores them:
    {"optimizer": a state dict indexed for `optimizer`, "scheduler": theirs (the same LambdaLR),
    "step": updates taken (the schedule's count, skipped ones included, as our step counts them),
    "applied": updates applied, "notes": lines to print}. `model` and `aligner` hold the weights
    already loaded (the aligner None when REPA is off)."""
    names = {name: p for name, p in model.named_parameters()}
    if aligner is not None:
        mine = dict(aligner.named_parameters())
        for key in _projector_keys(ckpt):
            names[key] = mine[our_projector_key(key, aligner.teacher.layer, source)]
    # Their optimized parameters, in their registration order (the order of their state dict's keys).
    order = [k for k in (strip_wrappers(key) for key in ckpt["model"]) if k in names and not k.startswith(FROZEN)]
    groups = [[k for k in order if names[k].dim() != 1], [k for k in order if names[k].dim() == 1]]
    theirs = ckpt["optimizer"]
    their_groups = theirs.get("param_groups", [])
    if len(their_groups) != 2 or [len(g["params"]) for g in their_groups] != [len(g) for g in groups]:
        extra = "" if aligner is not None or not _projector_keys(ckpt) else "; it trained REPA projectors: set training.enable_repa=true"
        raise CheckpointError(
            f"{source}: its optimizer holds {[len(g['params']) for g in their_groups]} parameters in its groups, this "
            f"model{' and its REPA projectors' if aligner is not None else ''} {[len(g) for g in groups]} (decayed, not "
            f"decayed){extra}; a teacher trained beside the model (their freeze_repa_encoder=false) cannot be resumed "
            "here; set training.reset_training_state=true to take the weights only")
    our_index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    mine = optimizer.state_dict()["param_groups"]
    state, new_groups = {}, []
    for g, (names_g, their_g) in enumerate(zip(groups, their_groups)):
        for name, index in zip(names_g, their_g["params"]):
            p = names[name]
            if id(p) not in our_index or our_index[id(p)] not in mine[g]["params"]:
                raise CheckpointError(f"{source}: parameter {name} is not in group {g} of this trainer's optimizer")
            entry = theirs["state"].get(index)
            if entry is None:
                continue  # never updated there (no gradient yet)
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in entry and entry[moment].shape != p.shape:
                    raise CheckpointError(f"{source}: optimizer state {index} ({name}) has {moment} of shape "
                                          f"{tuple(entry[moment].shape)}, the parameter {tuple(p.shape)}")
            state[our_index[id(p)]] = entry
        group = {k: v for k, v in their_g.items() if k not in ("params", "param_names", *IMPLEMENTATION)}
        new_groups.append({**group, **{k: mine[g][k] for k in IMPLEMENTATION if k in mine[g]}, "params": mine[g]["params"]})
    schedule = ckpt["lr_scheduler"]
    step = int(schedule["last_epoch"])
    notes = []
    forward_passes = int(ckpt["fwdbwd_pass_step"])
    if forward_passes // grad_accum_steps != step:
        notes.append(f"note: {source} counts {forward_passes} forward passes and {step} schedule steps; at "
                     f"training.grad_accum_steps={grad_accum_steps} the run resumes at step {step}, the schedule's")
    applied = int(ckpt["param_update_step"])
    if applied != step:
        notes.append(f"note: {source}: {step - applied} of its {step} updates were skipped (non-finite loss or a "
                     "gradient spike; which, the file does not say)")
    return {"optimizer": {"state": state, "param_groups": new_groups}, "scheduler": schedule, "step": step,
            "applied": applied, "notes": notes}


def schedule_note(scheduler, source: str) -> Optional[str]:
    """After their schedule state is loaded: a line where the learning rate their run was at differs
    from this config's schedule at the same step (another train_steps, warmup or scheduler_type), else None."""
    theirs = scheduler.state_dict().get("_last_lr")
    if not theirs:
        return None
    step = scheduler.last_epoch
    ours = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    if all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) for a, b in zip(theirs, ours)):
        return None
    return (f"warning: {source} was at learning rate {theirs[0]:.6g} at step {step}; this config's schedule gives "
            f"{ours[0]:.6g} there (training.train_steps, warmup, lr or scheduler_type differ from its run's): the "
            "next update applies the stored rate, the ones after it this config's")
