"""Training files recorded from the reference's train.py (../shared/reference/training/, its README's
"Training files"): our trainer's own update, step for step, against theirs.

From the file's config (the reference's YAML and overrides, read by our schema) and `init_state`,
this builds the model, the loss (its VGG-19 written from the file's seeded recipe as the MatConvNet
file the reference reads), AdamW with our parameter groups, the schedule over the run length our
run plan derives, and OptimStep, exactly as training/loop.py's setup() does, then feeds the recorded
batches, with the recorded target draws, through training/loop.update. Reported errors (each against
the README's tolerance): relative errors of the loss and its parts, the PSNR, the gradient norm and
the weights' norm after each step; the learning rate; updates and skips that differ; the final
weights (max abs, and the L2 distance relative to how far the reference moved them); Adam's moments
(relative L2 per recorded tensor) and its step count; and the optimizer's groups: parameters in
another group than theirs, or a group whose weight decay, betas or eps differ.
"""

import hashlib
import tempfile
from pathlib import Path

import torch

from configs.schema import config_from_dict
from data.dataset_scene import split_views
from model import build_model, load_weights
from training.loop import Run, Trainee, optimization, update
from training.perceptual import VGG19_CONVS, VGG19_LAYERS, write_matconvnet
from training.run_plan import plan_run
from utils.distributed import init_distributed

KINDS = ("efficient_lvsm_training", "lvsm_decoder_only_training")
KEYS = ("config", "init_state", "vgg_recipe", "batches", "steps", "final_state", "optimizer_final",
        "total_train_steps", "total_param_update_steps", "grad_accum_steps")
# The reference README's tolerances for a faithful fp32 reimplementation.
TOLERANCES = {"lr": 1e-12, "loss": 1e-5, "l2_loss": 1e-5, "perceptual_loss": 1e-5, "psnr": 1e-5, "grad_norm": 1e-3,
              "param_norm_after": 1e-6, "update_and_skip_mismatches": 0, "final_max_abs": 1e-4,
              "final_rel_l2": 1e-3, "exp_avg": 5e-3, "exp_avg_sq": 5e-3, "adam_step": 0, "optimizer_group_mismatches": 0}
PARTS = {"loss": "loss", "l2_loss": "l2", "perceptual_loss": "perceptual", "psnr": "psnr"}  # theirs -> ours


def validate_training_file(path: Path, data: dict) -> None:
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: training file lacks {missing}")
    if data["kind"] not in KINDS:
        raise ValueError(f"{path}: kind {data['kind']!r} is not one of {list(KINDS)}")
    n, accum = data["total_train_steps"], data["grad_accum_steps"]
    if len(data["batches"]) != n or len(data["steps"]) != n or n % accum:
        raise ValueError(f"{path}: {len(data['batches'])} batches and {len(data['steps'])} steps for "
                         f"total_train_steps={n} with grad_accum_steps={accum}")


def vgg_from_recipe(path: Path, recipe: dict) -> dict:
    """{conv name: (kernel [3, 3, c_in, c_out], bias [c_out])} in MatConvNet's layout, from the seeded
    recipe the file describes; its checksums are verified (a mismatch names the layer)."""
    convs = {}
    names = [n for n in VGG19_LAYERS if n in VGG19_CONVS]  # the 16 convs in torchvision order
    for i, name in enumerate(names):
        c_in, c_out = VGG19_CONVS[name]
        g = torch.Generator().manual_seed(recipe["base_seed"] + i)
        w = torch.randn(c_out, c_in, 3, 3, generator=g) * (2.0 / (9 * c_in)) ** 0.5  # OIHW
        b = torch.randn(c_out, generator=g) * 0.01
        check = recipe["checksums"].get(f"conv{i}")
        if check and hashlib.sha256(w.numpy().tobytes()).hexdigest() != check["weight_sha256"]:
            raise ValueError(f"{path}: the VGG recipe's conv{i} ({name}) does not match its recorded checksum")
        convs[name] = (w.permute(2, 3, 1, 0).numpy(), b.numpy())  # HWIO, as the .mat file stores it
    return convs


def param_norm(model: torch.nn.Module) -> float:
    return sum(p.detach().double().square().sum() for p in model.parameters() if p.requires_grad).sqrt().item()


def rel(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


def check_training_file(path: Path, data: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(error per measure, its tolerance) for one training file."""
    validate_training_file(path, data)
    with tempfile.TemporaryDirectory() as tmp:
        vgg = Path(tmp) / "imagenet-vgg-verydeep-19.mat"
        write_matconvnet(vgg, vgg_from_recipe(path, data["vgg_recipe"]))
        cfg = config_from_dict(data["config"], [f"training.perceptual_weights_path={vgg}", "training.device=cpu",
                                                f"training.checkpoint_dir={tmp}"], where=f"{path}: config")
        run, errors = trainer(cfg, data, path), {k: 0.0 for k in TOLERANCES}
        t, steps = cfg.training, data["steps"]
        for first in range(0, data["total_train_steps"], t.grad_accum_steps):
            group = range(first, first + t.grad_accum_steps)
            pairs = (split_views(data["batches"][i], t.num_input_views, t.num_target_views, t.target_has_input,
                                 target_ids=steps[i]["target_index"]) for i in group)
            out = update(run, pairs)
            for i, micro in zip(group, out["micro"]):
                for theirs, ours in PARTS.items():
                    errors[theirs] = max(errors[theirs], rel(float(micro[ours]), steps[i][theirs]))
                errors["lr"] = max(errors["lr"], rel(out["lr"], steps[i]["lr"]) if steps[i]["lr"] else abs(out["lr"]))
            last = steps[group[-1]]  # the update happens at the group's last forward step, none before it
            mismatches = sum(bool(steps[i]["update"]) != (i == group[-1]) for i in group)
            errors["update_and_skip_mismatches"] += mismatches + int(out["applied"] == bool(last["skipped"]))
            errors["grad_norm"] = max(errors["grad_norm"], rel(float(out["grad_norm"]), last["grad_norm"]))
            errors["param_norm_after"] = max(errors["param_norm_after"], rel(param_norm(run.model),
                                                                             last["param_norm_after"]))
    errors.update(final_errors(run, data))
    return errors, TOLERANCES


def trainer(cfg, data: dict, path: Path) -> Run:
    """The trainer's parts for this config (training/loop.optimization), the model at `init_state`."""
    t, dist = cfg.training, init_distributed("cpu")
    torch.manual_seed(t.seed)
    model = build_model(cfg.model)
    load_weights(model, {"model": data["init_state"]}, name=f"{path}: init_state")
    # The length of the reference's dataset: its config's dataset_len (a key our trainer does not read;
    # here our run plan derives the run length from it, as from a real dataset's length).
    scenes = data["config"]["training"].get("dataset_len") or len(data["batches"]) * t.batch_size_per_gpu
    plan = plan_run(cfg, scenes, 1)
    if plan.total_steps != data["total_param_update_steps"]:
        raise ValueError(f"{path}: our run plan gives {plan.total_steps} updates ({plan.line}), the file "
                         f"{data['total_param_update_steps']}")
    loss, optimizer, scheduler, optim = optimization(cfg, dist, model, None, plan.total_steps)
    return Run(cfg, dist, model, Trainee(model, None), None, loss, optimizer, scheduler, optim, None, None, None, plan)


def group_mismatches(run: Run, data: dict) -> int:
    """Parameters (by name) that are in another AdamW group here than in the file, plus groups whose
    weight_decay, betas or eps differ from the file's."""
    theirs = data["optimizer_final"].get("param_groups") or []
    names = {id(p): n for n, p in run.model.named_parameters()}
    ours = [({names[id(p)] for p in g["params"]}, g) for g in run.optimizer.param_groups]
    count = abs(len(ours) - len(theirs)) if theirs else 0
    for (mine, group), their in zip(ours, theirs):
        if "names" in their:
            count += len(mine ^ set(their["names"]))
        count += sum(key in their and _floats(group[key]) != _floats(their[key]) for key in ("weight_decay", "betas", "eps"))
    return count


def _floats(value) -> tuple[float, ...]:
    return tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def final_errors(run: Run, data: dict) -> dict[str, float]:
    """Weights and Adam's recorded moments after the last step, against the file's."""
    ours = dict(run.model.named_parameters())
    final, init = data["final_state"], data["init_state"]
    max_abs = max((ours[k].detach() - v).abs().max().item() for k, v in final.items())
    dist = sum((ours[k].detach().double() - v.double()).square().sum() for k, v in final.items()).sqrt()
    moved = sum((v.double() - init[k].double()).square().sum() for k, v in final.items()).sqrt()
    out = {"final_max_abs": max_abs, "final_rel_l2": (dist / max(moved, 1e-30)).item(), "exp_avg": 0.0,
           "exp_avg_sq": 0.0, "adam_step": 0.0, "optimizer_group_mismatches": group_mismatches(run, data)}
    for name, theirs in data["optimizer_final"]["state"].items():
        state = run.optimizer.state[ours[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            ref = theirs[key].double()
            out[key] = max(out[key], ((state[key].double() - ref).norm() / max(ref.norm(), 1e-30)).item())
        out["adam_step"] = max(out["adam_step"], abs(float(state["step"]) - float(theirs["step"])))
    return out
