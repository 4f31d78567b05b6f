"""Run length, learning rate and save points follow each reference trainer's rules (training/run_plan.py).

The expected numbers come from the reference's own arithmetic written out here
(`int(train_epochs * dataset_len // effective_batch)`, ...) and from the `transformers` schedules
that both reference trainers call, run on a dummy optimizer.
"""

import json

import pytest
import torch
import transformers

from configs.schema import load_config
from data import synthetic
from tests.conftest import REFERENCE, ROOT
from training.checkpoints import checkpoints
from training.loop import train
from training.optim import lr_factor
from training.run_plan import num_views, plan_run
from utils.config import ConfigError
from utils.distributed import init_distributed

REF = REFERENCE / "configs"
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason=f"reference configs not found at {REF}")
YAMLS = {"Efficient-LVSM.yaml": [], "LVSM_scene_decoder_only.yaml": ["model.transformer.n_layer=1"],
         "LVSM_scene_encoder_decoder.yaml": ["model.transformer.encoder_n_layer=1", "model.transformer.decoder_n_layer=1",
                                             "model.transformer.n_latent_vectors=8"]}
SCHEDULES = {"constant": lambda opt, w, n: transformers.get_constant_schedule_with_warmup(opt, w),
             "cosine": transformers.get_cosine_schedule_with_warmup,
             "linear": transformers.get_linear_schedule_with_warmup}


def reference_lrs(kind: str, lr: float, warmup: int, total: int, steps: int) -> list[float]:
    """The lr of each of the first `steps` updates under the reference's scheduler."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched, out = SCHEDULES[kind](opt, warmup, total), []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    out = tmp_path_factory.mktemp("rooms")
    synthetic.generate(out, "rooms", 8, 1, frames=16, size=32, seed=1)
    return out


def reference_config(name, rooms, ckpt_dir, *extra):
    """A reference YAML unchanged, but for a tiny model, CPU-sized data and no VGG/compile/workers."""
    return load_config(REF / name, [
        "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32", "model.transformer.d=32",
        "model.transformer.d_head=8", "model.transformer.n_layer=1", *YAMLS[name],
        f"training.dataset_path={rooms / 'train' / 'full_list.txt'}", f"training.checkpoint_dir={ckpt_dir}",
        "training.view_selector.min_frame_dist=3", "training.view_selector.max_frame_dist=12", "training.device=cpu",
        "training.use_compile=false", "training.perceptual_loss_weight=0", "training.num_workers=0",
        "training.print_every=1", "training.vis_every=0", "training.api_key_path=null", "training.wandb_mode=disabled",
        *extra])


def logged(ckpt_dir, key="lr"):
    return [json.loads(line)[key] for line in (ckpt_dir / "metrics.jsonl").read_text().splitlines()
            if key in json.loads(line)]


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_lr_factor_is_the_transformers_schedule(kind):
    warmup, total = 7, 40
    expected = reference_lrs(kind, 1.0, warmup, total, 60)  # past the end too: no clamping there either
    assert [lr_factor(s, warmup, total, kind) for s in range(60)] == pytest.approx(expected, abs=1e-15)
    assert reference_lrs(kind, 1.0, 0, 10, 1)[0] == pytest.approx(lr_factor(0, 0, 10, kind))


@pytest.mark.parametrize("name", list(YAMLS))
def test_reference_yaml_run_length_and_lr(name, rooms, tmp_path, capsys):
    cfg = reference_config(name, rooms, tmp_path)
    result = train(cfg, init_distributed("cpu"), max_steps=3)
    t, scenes = cfg.training, 8
    if name == "Efficient-LVSM.yaml":  # train.py: int(train_epochs * dataset_len // total_batch_size)
        total = int(t.train_epochs * scenes // (t.batch_size_per_gpu * 1 * t.grad_accum_steps))
        assert total == 80
        kind = "constant"  # the YAML sets it
        assert "80 steps: train_epochs=20 over 8 scenes at effective batch 2, capped by train_time=24 h" \
            in capsys.readouterr().out
        assert cfg.training.backup_code and (tmp_path / "src" / ROOT.name / "training" / "run_plan.py").is_file()
    else:  # LVSM: train_steps; no scheduler_type in the YAML, so the trainer's default, cosine
        total, kind = t.train_steps, "cosine"
        assert total == 100000 and "100000 steps: training.train_steps=100000" in capsys.readouterr().out
    assert result["step"] == 3
    assert logged(tmp_path) == pytest.approx(reference_lrs(kind, t.lr, t.warmup, total, 3), rel=1e-12)
    assert logged(tmp_path)[0] == 0.0  # the first update of both references has lr 0


def test_lvsm_cosine_over_a_whole_short_run(rooms, tmp_path):
    cfg = reference_config("LVSM_scene_decoder_only.yaml", rooms, tmp_path, "training.train_steps=6",
                           "training.warmup=2", "training.batch_size_per_gpu=2")
    assert train(cfg, init_distributed("cpu"))["step"] == 6
    assert logged(tmp_path) == pytest.approx(reference_lrs("cosine", 4e-4, 2, 6, 6), rel=1e-12)


def test_efficient_epochs_views_and_saves(rooms, tmp_path, capsys):
    cfg = reference_config("Efficient-LVSM.yaml", rooms, tmp_path, "training.train_epochs=1",
                           "training.checkpoint_every_epoch=0.5", "training.num_target_views=3",
                           "training.keep_checkpoints=0")
    assert num_views(cfg) == 5  # train.py: num_views = num_input_views + num_target_views
    result = train(cfg, init_distributed("cpu"))
    assert result["step"] == int(1 * 8 // 2) == 4
    # save_every_steps = int(dataset_len * checkpoint_every_epoch // total_batch_size) + 1 = 3 forward passes
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt_00000003.pt", "ckpt_00000004.pt"]
    out = capsys.readouterr().out
    assert "warning: training.num_views=8 (Efficient-LVSM uses num_input_views + num_target_views = 5)" in out
    assert "warning: training.train_steps=20000" in out


def test_save_points_with_accumulation():
    cfg = load_config(REF / "Efficient-LVSM.yaml", ["training.grad_accum_steps=2", "training.checkpoint_every_epoch=1"])
    plan = plan_run(cfg, dataset_len=10, world_size=1)
    assert plan.save_every_forward == int(10 * 1 // 4) + 1 == 3 and plan.total_steps == int(20 * 10 // 4)
    # the reference saves after forward passes 3, 6, 9, ...: inside our optimizer steps 2, 3, 5, ...
    assert [s for s in range(1, 8) if plan.save_due(s, 2)] == [2, 3, 5, 6]
    assert plan.time_limit_s == 24 * 3600 and plan.save_every_s == 3600


def test_family_defaults_and_bad_values():
    eff = load_config(ROOT / "configs" / "tiny.yaml")  # Efficient-LVSM with train_steps, no time keys
    plan = plan_run(eff, dataset_len=100, world_size=1)
    assert plan.total_steps == 3000 and plan.time_limit_s == 12 * 3600 and plan.save_every_s == 3600
    lvsm = load_config(REF / "LVSM_scene_decoder_only.yaml", ["training.train_epochs=3"])
    plan = plan_run(lvsm, dataset_len=100, world_size=4)
    assert plan.total_steps == 100000 and plan.time_limit_s is None and plan.save_every_forward == 2000
    # LVSM's checkpoint_every counts forward passes: with accumulation 2 and 3, updates 2, 3, 5, 6 hold them
    acc = plan_run(load_config(REF / "LVSM_scene_decoder_only.yaml", ["training.grad_accum_steps=2",
                                                                      "training.checkpoint_every=3"]), 100, 1)
    assert [s for s in range(1, 8) if acc.save_due(s, 2)] == [2, 3, 5, 6] and not acc.save_every_steps
    assert any("train_epochs" in item for item in plan.ignored)
    assert load_config(REF / "LVSM_scene_decoder_only.yaml").training.scheduler_type == "cosine"
    for bad in ("training.train_time=0", "training.train_epochs=-1", "training.checkpoint_every=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            plan_run(load_config(REF / "Efficient-LVSM.yaml", [bad]), dataset_len=100, world_size=1)
    with pytest.raises(ConfigError, match="0 steps"):
        plan_run(load_config(REF / "Efficient-LVSM.yaml", ["training.train_epochs=0.01"]), dataset_len=10, world_size=1)


def test_time_based_save_and_limit(rooms, tmp_path, capsys):
    cfg = reference_config("Efficient-LVSM.yaml", rooms, tmp_path, "training.checkpoint_every_time=1e-9",
                           "training.keep_checkpoints=0")
    assert train(cfg, init_distributed("cpu"), max_steps=2)["step"] == 2
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt_00000001.pt", "ckpt_00000002.pt"]
    cfg = reference_config("Efficient-LVSM.yaml", rooms, tmp_path / "limit", "training.train_time=1e-9")
    assert train(cfg, init_distributed("cpu"))["step"] == 1
    assert "stopping at step 1: time limit" in capsys.readouterr().out


def test_resume_ckpt_and_reset_training_state(rooms, tmp_path, capsys):
    first = tmp_path / "first"
    train(reference_config("Efficient-LVSM.yaml", rooms, first), init_distributed("cpu"), max_steps=2)
    ckpt = checkpoints(first)[-1]
    # resume_ckpt as the reference passes it: the folder or the file; the full state comes back
    result = train(reference_config("Efficient-LVSM.yaml", rooms, tmp_path / "second", f"training.resume_ckpt={first}"),
                   init_distributed("cpu"), max_steps=1)
    assert result["step"] == 3
    # reset_training_state: the weights only, from step 0 (a reference checkpoint holds just "model" and co.)
    ref_style = tmp_path / "ref.pt"
    torch.save({"model": torch.load(ckpt, weights_only=True)["model"], "fwdbwd_pass_step": 2}, ref_style)
    with pytest.raises(Exception, match="reset_training_state"):
        train(reference_config("Efficient-LVSM.yaml", rooms, tmp_path / "third", f"training.resume_ckpt={ref_style}"),
              init_distributed("cpu"), max_steps=1)
    result = train(reference_config("Efficient-LVSM.yaml", rooms, tmp_path / "fourth", f"training.resume_ckpt={ref_style}",
                                    "training.reset_training_state=true"), init_distributed("cpu"), max_steps=1)
    assert result["step"] == 1 and "training state reset" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="training.resume_ckpt"):
        train(reference_config("Efficient-LVSM.yaml", rooms, tmp_path / "fifth",
                               f"training.resume_ckpt={tmp_path / 'missing.pt'}"), init_distributed("cpu"))


def test_train_sh_is_the_authors_command(rooms, tmp_path):
    """scripts/train.sh runs the authors' scripts/train.sh settings through our train.py."""
    import os
    import subprocess
    env = {**os.environ, "CONFIG": "configs/tiny.yaml", "REPA": "false", "NPROC": "1", "EXP": "t",
           "DATA": str(rooms / "train" / "full_list.txt")}
    out = subprocess.run(["bash", "scripts/train.sh", "model.image_tokenizer.image_size=32",
                          "model.target_pose_tokenizer.image_size=32", "training.use_compile=false",
                          f"training.checkpoint_dir={tmp_path}", "training.device=cpu", "--max_steps", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # 100 epochs of 8 scenes at 2 per step; checkpoints every int(8 * 5 // 2) + 1 forward passes
    assert "400 steps: train_epochs=100 over 8 scenes at effective batch 2, capped by train_time=24 h; " \
           "checkpoints every 21 forward passes (checkpoint_every_epoch=5) and every 1 h" in out.stdout
    assert "model.transformer.n_layer: 3 -> 6" in out.stdout and [p.name for p in checkpoints(tmp_path)] == \
        ["ckpt_00000001.pt"]
