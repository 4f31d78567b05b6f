"""scripts/check_reference.py: passes on the shipped reference vectors, reads files of other
sizes and key prefixes, and fails when a render does not match."""

import subprocess
import sys

import pytest
import torch

from configs.schema import config_from_dict
from model import build_model
from tests.conftest import ROOT, random_views

# The first sample of ../shared/reference/efficient_lvsm.pt (recorded from the authors' Efficient-LVSM
# in fp32): it ships with the tests so that a clone without ../shared still checks the model's numbers.
SHIPPED_SAMPLE = ROOT / "tests" / "data" / "efficient_lvsm_sample0.pt"


def _run(*files):
    return subprocess.run([sys.executable, "-m", "scripts.check_reference", *map(str, files)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_shipped_sample_passes_without_shared():
    sample = torch.load(SHIPPED_SAMPLE, weights_only=True)
    assert sample["kind"] == "efficient_lvsm" and sample["render"].shape[0] == 1
    result = _run(SHIPPED_SAMPLE)
    assert result.returncode == 0 and result.stdout.startswith("ok "), result.stdout + result.stderr


def test_shipped_reference_vectors_pass(reference_dir):
    files = sorted(reference_dir.glob("*.pt"))
    assert len(files) >= 4
    result = _run(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == len(files)


def test_training_reference_files_pass(reference_dir):
    """Our trainer's update, fed the batches recorded from the authors' train.py, reproduces its steps."""
    files = sorted((reference_dir / "training").glob("*.pt"))
    assert files
    result = _run(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == len(files) and "final_rel_l2" in result.stdout


def test_training_file_mismatch_fails(reference_dir, tmp_path):
    data = torch.load(reference_dir / "training" / "efficient_lvsm_train.pt", weights_only=True)
    data["steps"][2]["loss"] *= 1.001  # a loss off by 1e-3 relative
    data["steps"][3]["skipped"] = True  # an update the reference skipped and we applied
    torch.save(data, tmp_path / "bad.pt")
    result = _run(tmp_path / "bad.pt")
    assert result.returncode == 1 and result.stdout.startswith("FAIL")
    assert "over: loss, update_and_skip_mismatches" in result.stdout, result.stdout
    good = torch.load(reference_dir / "training" / "efficient_lvsm_train.pt", weights_only=True)
    moved = good["optimizer_final"]["param_groups"]
    moved[1]["names"].append(moved[0]["names"].pop())  # a matrix in the group without weight decay
    moved[0]["eps"] = 1e-6
    torch.save(good, tmp_path / "groups.pt")
    result = _run(tmp_path / "groups.pt")
    assert result.returncode == 1 and "over: optimizer_group_mismatches" in result.stdout, result.stdout
    assert "optimizer_group_mismatches 3.00e+00" in result.stdout
    del data["final_state"]
    torch.save(data, tmp_path / "short.pt")
    result = _run(tmp_path / "short.pt")
    assert result.returncode == 1 and "lacks ['final_state']" in result.stdout


def _record(tmp_path, kind, b, v_in, v_t, h, w, prefix=""):
    """A file in the reference format, rendered by our model (tests the reader, not the numbers)."""
    class_names = {"efficient_lvsm": "model.efficient_lvsm.Images2LatentScene",
                   "lvsm_decoder_only": "model.LVSM_scene_decoder_only.Images2LatentScene",
                   "lvsm_encoder_decoder": "model.LVSM_scene_encoder_decoder.Images2LatentScene"}
    transformer = {"d": 32, "d_head": 8, "n_layer": 2, "encoder_n_layer": 1, "decoder_n_layer": 1,
                   "n_latent_vectors": 8}
    config = {"model": {"class_name": class_names[kind], "transformer": transformer,
                        "image_tokenizer": {"image_size": h, "patch_size": 8, "in_channels": 9}}}
    torch.manual_seed(b * 10 + v_in)
    model = build_model(config_from_dict(config).model).eval()
    images, c2w, fx = random_views(b, v_in + v_t, h, w, seed=v_in)
    with torch.no_grad():
        render = model(images[:, :v_in], c2w[:, :v_in], fx[:, :v_in], c2w[:, v_in:], fx[:, v_in:])
    state = {prefix + k: t for k, t in model.state_dict().items()}
    data = {"kind": kind, "config": config, "checkpoint": {"model": state},
            "batch": {"image": images, "c2w": c2w, "fxfycxcy": fx},
            "num_input_views": v_in, "num_target_views": v_t, "render": render}
    path = tmp_path / f"{kind}_{b}_{v_in}_{v_t}_{h}x{w}.pt"
    torch.save(data, path)
    return path, data


@pytest.mark.parametrize("kind,b,v_in,v_t,h,w,prefix", [
    ("efficient_lvsm", 3, 4, 1, 24, 40, "_orig_mod."),
    ("lvsm_decoder_only", 1, 1, 3, 40, 16, "module."),
    ("lvsm_encoder_decoder", 2, 3, 2, 16, 32, "module._orig_mod."),
])
def test_other_sizes_and_prefixes_are_read(tmp_path, kind, b, v_in, v_t, h, w, prefix):
    path, _ = _record(tmp_path, kind, b, v_in, v_t, h, w, prefix)
    result = _run(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mismatch_fails(tmp_path):
    path, data = _record(tmp_path, "efficient_lvsm", 1, 2, 1, 16, 16)
    data["render"] = data["render"] + 1e-3
    torch.save(data, path)
    result = _run(path)
    assert result.returncode == 1 and "FAIL" in result.stdout


def test_unknown_file_fails(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"hello": torch.zeros(1)}, path)
    result = _run(path)
    assert result.returncode == 1 and "neither a model file" in result.stdout


def test_malformed_files_are_named_and_the_rest_still_checked(tmp_path):
    """Not a torch file, missing keys, wrong shapes: each one FAIL line naming the file and the reason;
    a good file after them is still checked, and the exit code is 1."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 not a torch file" * 10)
    _, data = _record(tmp_path, "efficient_lvsm", 1, 2, 1, 16, 16)
    no_c2w = tmp_path / "no_c2w.pt"
    torch.save({**data, "batch": {"image": data["batch"]["image"], "fxfycxcy": data["batch"]["fxfycxcy"]}}, no_c2w)
    no_render = tmp_path / "no_render.pt"
    torch.save({k: v for k, v in data.items() if k != "render"}, no_render)
    bad_render = tmp_path / "bad_render.pt"
    torch.save({**data, "render": data["render"][..., :8]}, bad_render)
    bad_pose = tmp_path / "bad_pose.pt"
    torch.save({"c2w_in": [torch.eye(4)[None]], "c2w_out": [torch.eye(3)[None]], "scene_scale_factor": 1.35}, bad_pose)
    good, _ = _record(tmp_path, "lvsm_decoder_only", 1, 1, 1, 16, 16)
    result = _run(garbage, no_c2w, no_render, bad_render, bad_pose, good)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6, result.stdout + result.stderr
    expected = [(garbage, "cannot be read as a torch checkpoint"), (no_c2w, "lacks key 'c2w'"),
                (no_render, "lacks key 'render'"), (bad_render, "'render' has shape [1, 1, 3, 16, 8]"),
                (bad_pose, "'c2w_out[0]' has shape [1, 3, 3]")]
    for line, (path, reason) in zip(lines, expected):
        assert line.startswith(f"FAIL {path}:") and reason in line, line
        assert line.count(str(path)) == 1, line
    assert lines[-1].startswith(f"ok   {good}:"), lines[-1]


def test_scripts_run_by_path_from_any_folder(tmp_path):
    """`python scripts/check_reference.py FILE` works as well as `-m`, from another folder, without
    path edits: scripts/setup.sh installs the project's packages (editable)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_reference.py"), str(SHIPPED_SAMPLE)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("ok "), result.stdout + result.stderr


def _record_training(tmp_path, reference_dir, name, model, training, views, size):
    """A training file of another shape in the reference format, its numbers taken by our own trainer
    (tests that the checker reads any model, size, view count, accumulation and skip, not the numbers:
    those are pinned by the recorded file). The config and VGG recipe are the recorded file's, changed
    by `model` and `training`."""
    import copy
    import random

    from data.dataset_scene import split_views
    from scripts.check_training import param_norm, vgg_from_recipe
    from tests.conftest import random_views
    from training.loop import Run, Trainee, optimization, update
    from training.perceptual import write_matconvnet
    from training.run_plan import plan_run
    from utils.distributed import init_distributed
    base = torch.load(reference_dir / "training" / "efficient_lvsm_train.pt", weights_only=True)
    config = copy.deepcopy(base["config"])
    for section, changes in (("model", model), ("training", training)):
        for key, value in changes.items():
            node = config[section]
            *parents, leaf = key.split(".")
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
    vgg = tmp_path / f"{name}.mat"
    write_matconvnet(vgg, vgg_from_recipe(tmp_path, base["vgg_recipe"]))
    cfg = config_from_dict(config, [f"training.perceptual_weights_path={vgg}", "training.device=cpu",
                                    f"training.checkpoint_dir={tmp_path}"])
    t, dist = cfg.training, init_distributed("cpu")
    plan = plan_run(cfg, config["training"]["dataset_len"], 1)
    torch.manual_seed(0)
    net = build_model(cfg.model)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    loss, optimizer, scheduler, optim = optimization(cfg, dist, net, None, plan.total_steps)
    run = Run(cfg, dist, net, Trainee(net, None), None, loss, optimizer, scheduler, optim, None, None, None, plan)
    forward = plan.total_steps * t.grad_accum_steps
    batches, steps, rng = [], [], random.Random(0)
    for i in range(forward):
        image, c2w, fx = random_views(t.batch_size_per_gpu, views, size, size, seed=i)
        batches.append({"image": image, "c2w": c2w, "fxfycxcy": fx, "scene_name": ["s"] * len(image),
                        "index": torch.zeros(len(image), views, 2, dtype=torch.long)})
    for first in range(0, forward, t.grad_accum_steps):
        group = range(first, first + t.grad_accum_steps)
        draws = [torch.tensor([rng.sample(range(views), t.num_target_views) for _ in range(t.batch_size_per_gpu)])
                 for _ in group]
        out = update(run, (split_views(batches[i], t.num_input_views, t.num_target_views, True, target_ids=d)
                           for i, d in zip(group, draws)))
        for i, d, micro in zip(group, draws, out["micro"]):
            last = i == group[-1]
            steps.append({"forward_step": i + 1, "lr": out["lr"], "loss": float(micro["loss"]),
                          "l2_loss": float(micro["l2"]), "perceptual_loss": float(micro["perceptual"]),
                          "psnr": float(micro["psnr"]), "grad_norm": float(out["grad_norm"]) if last else None,
                          "update": last, "skipped": last and not out["applied"], "target_index": d,
                          "param_norm_after": param_norm(net)})
    names = {id(p): n for n, p in net.named_parameters()}
    state = {names[id(p)]: {k: v.clone() for k, v in optimizer.state[p].items()}
             for p in list(optimizer.state)[:4]}
    groups = [{"names": [names[id(p)] for p in g["params"]], "weight_decay": g["weight_decay"],
               "betas": list(g["betas"]), "eps": g["eps"]} for g in optimizer.param_groups]
    kind = "lvsm_decoder_only" if "decoder_only" in cfg.model.class_name else "efficient_lvsm"
    data = {"kind": f"{kind}_training", "config": config, "init_state": init,
            "vgg_recipe": base["vgg_recipe"], "batches": batches, "steps": steps,
            "final_state": {k: v.clone() for k, v in net.state_dict().items()},
            "optimizer_final": {"param_groups": groups, "state": state}, "total_train_steps": forward,
            "total_param_update_steps": plan.total_steps, "grad_accum_steps": t.grad_accum_steps}
    torch.save(data, tmp_path / f"{name}.pt")
    return tmp_path / f"{name}.pt", data


def test_training_files_of_other_shapes_are_read(reference_dir, tmp_path):
    """LVSM decoder-only (cosine, accumulation 2, 3 inputs, 40 px, clipping on every update) and
    Efficient-LVSM whose every update is skipped: the checker assumes no size, family or count."""
    lvsm, lvsm_data = _record_training(
        tmp_path, reference_dir, "lvsm", {"class_name": "model.LVSM_scene_decoder_only.Images2LatentScene",
                                          "transformer.d": 32, "transformer.d_head": 16, "transformer.n_layer": 2,
                                          "image_tokenizer.image_size": 40, "target_pose_tokenizer.image_size": 40},
        {"scheduler_type": "cosine", "grad_accum_steps": 2, "num_input_views": 3, "num_target_views": 2,
         "num_views": 5, "train_steps": 3, "warmup": 1, "grad_clip_norm": 1e-3, "allowed_gradnorm_factor": 1e9},
        views=5, size=40)
    skips, skip_data = _record_training(
        tmp_path, reference_dir, "skips", {"transformer.d": 32, "transformer.d_head": 16,
                                           "image_tokenizer.image_size": 32, "target_pose_tokenizer.image_size": 32},
        {"grad_clip_norm": 1e-4, "allowed_gradnorm_factor": 1.0}, views=4, size=32)
    assert lvsm_data["kind"] == "lvsm_decoder_only_training" and len(lvsm_data["steps"]) == 6
    assert all(s["grad_norm"] > 1e-3 for s in lvsm_data["steps"] if s["update"])  # clipped at every update
    assert all(s["skipped"] for s in skip_data["steps"]) and len(skip_data["steps"]) == 4
    result = _run(lvsm, skips)
    assert result.returncode == 0 and result.stdout.count("ok ") == 2, result.stdout + result.stderr
