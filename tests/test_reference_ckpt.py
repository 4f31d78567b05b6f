"""Checkpoints of the reference's train.py with REPA on (training/reference_ckpt.py): evaluated, fine-tuned
and resumed here. The file is built as theirs is: a module registered in the order of their
Images2LatentScene.__init__ (Ayakaee/Efficient-LVSM model/efficient_lvsm.py: tokenizers with the frozen
DINO `repa_encoder` among them, the blocks, the frozen `loss_computer`, then `_init_repa`'s
`repa_projector[stream][T][S]`), their create_optimizer (utils/training_utils.py), transformers' cosine
schedule, a few AdamW steps, and their save dict (train.py)."""

import json
import shutil

import pytest
import torch
import torch.nn as nn

from configs.schema import load_config
from data import synthetic
from model import build_model, load_weights
from model.checkpoint import CheckpointError, reference_checkpoints
from tests.conftest import ROOT
from tests.test_repa_teacher import dirs, one_thread  # noqa: F401 (fixtures)
from utils.distributed import init_distributed

transformers = pytest.importorskip("transformers")

# Their registration order; "repa_encoder" and "loss_computer" are frozen stand-ins (never optimized).
THEIR_ORDER = ["rgbp_tokenizer", "repa_encoder", "target_pose_tokenizer", "image_token_decoder", "self_cross_blocks",
               "input_self_attn_blocks", "loss_computer", "repa_projector"]
TEACHER, STUDENT, STEPS, TOTAL = 3, 2, 3, 6  # model.repa_config "3-2"; steps taken there; train_steps


def their_projector(d, hidden, out):
    return nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out))


class TheirModel(nn.Module):
    def __init__(self, ours: nn.Module, d: int, projector_dim: int, z_dim: int):
        super().__init__()
        children = dict(ours.named_children())
        assert set(children) == set(THEIR_ORDER) - {"repa_encoder", "loss_computer", "repa_projector"}
        for name in THEIR_ORDER:
            if name == "repa_encoder":
                self.repa_encoder = nn.Linear(z_dim, z_dim).requires_grad_(False)
            elif name == "loss_computer":
                self.loss_computer = nn.Conv2d(3, 4, 3).requires_grad_(False)
            elif name == "repa_projector":
                self.repa_projector = nn.ModuleDict({s: nn.ModuleDict({str(TEACHER): nn.ModuleDict(
                    {str(STUDENT): their_projector(d, projector_dim, z_dim)})}) for s in ("input", "target")})
            else:
                setattr(self, name, children[name])


def their_optimizer(model, lr):
    """utils/training_utils.py create_optimizer (fused=True, as theirs)."""
    decay, nodecay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (nodecay if p.dim() == 1 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": nodecay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True)


def their_name(ours: str) -> str:
    """Our parameter name (model or aligner) -> theirs."""
    for stream, blocks in (("input", "input_self_attn_blocks"), ("target", "self_cross_blocks")):
        prefix = f"repa.projectors.{blocks}_{STUDENT - 1}."
        if ours.startswith(prefix):
            return f"repa_projector.{stream}.{TEACHER}.{STUDENT}.{ours[len(prefix):]}"
    return ours.removeprefix("model.")


def random_grads(named, seed):
    g = torch.Generator().manual_seed(seed)
    return {their_name(n): torch.randn(p.shape, generator=g) for n, p in named}


@pytest.fixture(scope="module")
def theirs(dirs, tmp_path_factory):
    """(config overrides, folder with their checkpoint, their model, optimizer and schedule after STEPS steps)."""
    root = tmp_path_factory.mktemp("reference_ckpt")
    synthetic.generate(root / "rooms", "rooms", 4, 2, frames=10, size=32, seed=0)
    overrides = [
        "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32", "model.transformer.d=32",
        "model.transformer.d_head=8", "model.transformer.n_layer=2", "model.projector_dim=16",
        "model.image_tokenizer.type=dinov3", f"model.image_tokenizer.model_path={dirs['dinov3']}",
        f"model.repa_config={TEACHER}-{STUDENT}", "training.enable_repa=true", "training.proj_loss_type=cos",
        f"training.dataset_path={root / 'rooms' / 'train' / 'full_list.txt'}", "training.batch_size_per_gpu=2",
        "training.view_selector.min_frame_dist=3", "training.view_selector.max_frame_dist=8", "training.device=cpu",
        "training.warmup=2", "training.scheduler_type=cosine", f"training.train_steps={TOTAL}", "training.lr=1e-3",
        "training.beta2=0.95", "training.weight_decay=0.05", "training.checkpoint_every=100", "training.print_every=1"]
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    torch.manual_seed(1)
    model = TheirModel(build_model(cfg.model), 32, 16, 32)
    optimizer = their_optimizer(model, 1e-3)
    schedule = transformers.get_cosine_schedule_with_warmup(optimizer, 2, TOTAL)
    for step in range(STEPS):
        for name, grad in random_grads(model.named_parameters(), step).items():
            if model.get_parameter(name).requires_grad:
                model.get_parameter(name).grad = grad
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    folder = root / "their_run"
    folder.mkdir()
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": schedule.state_dict(),
               "fwdbwd_pass_step": STEPS, "param_update_step": STEPS}
    torch.save(payload, folder / f"ckpt_{100:04f}.pt")  # train.py: f"ckpt_{cur_epoch * 100:04f}.pt"
    torch.save({**payload, "fwdbwd_pass_step": 1}, folder / f"ckpt_{0:04f}.pt")  # an older one
    torch.save(payload, folder / "ckpt_t0.500h.pt")  # time-based: passed over, as there
    return overrides, folder, root, model, optimizer, schedule


def test_their_folder_is_ordered_as_theirs(theirs):
    _, folder, *_ = theirs
    assert [p.name for p in reference_checkpoints(folder)] == ["ckpt_0.000000.pt", "ckpt_100.000000.pt"]


def test_evaluates(theirs, tmp_path):
    """The renderer's weights load strictly, teacher, VGG and projectors passed over; inference.py scores it."""
    from inference import main
    overrides, folder, root, their_model, *_ = theirs
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    model = build_model(cfg.model)
    load_weights(model, folder / "ckpt_100.000000.pt")
    for name, p in model.state_dict().items():
        assert torch.equal(p, their_model.state_dict()[name]), name
    test = root / "rooms" / "test"
    summary = main(["--config", str(ROOT / "configs" / "tiny.yaml"), *overrides, f"inference.checkpoint_dir={folder}",
                    f"training.dataset_path={test / 'full_list.txt'}", "training.enable_repa=false",
                    f"inference.view_idx_file_path={test / 'evaluation_index.json'}",
                    f"inference_out_dir={tmp_path / 'eval'}", "inference.generate_website=false"])
    assert summary["checkpoint"].endswith("ckpt_100.000000.pt") and summary["images"] > 0


def test_resumes_their_optimizer_schedule_and_projectors(theirs, tmp_path):
    """After the resume, one AdamW step with the same gradients on both sides gives the same weights:
    every parameter's moments, step count and group settings reached the right parameter."""
    from training.loop import setup
    overrides, folder, _, their_model, their_opt, their_schedule = theirs
    model, opt = their_model, their_opt
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + [f"training.checkpoint_dir={tmp_path / 'ours'}",
                                                                    f"training.resume_ckpt={folder}"])
    run = setup(cfg, init_distributed("cpu"))
    assert run.step == STEPS and run.optim.counts["applied"] == STEPS
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(their_opt.param_groups[0]["lr"], rel=1e-12)
    assert [g["weight_decay"] for g in run.optimizer.param_groups] == [0.05, 0.0]
    named = [(f"model.{n}", p) for n, p in run.model.named_parameters()] + \
            [(f"repa.{n}", p) for n, p in run.repa.named_parameters()]
    theirs_now = dict(their_model.named_parameters())
    for name, p in named:
        assert torch.equal(p, theirs_now[their_name(name)]), name  # projectors taken from repa_projector.*
    # one more step on both sides, the same gradient per name
    import copy
    model, opt = copy.deepcopy(their_model), None
    opt = their_optimizer(model, 1e-3)
    opt.load_state_dict(their_opt.state_dict())
    grads = random_grads(named, 99)
    for name, p in named:
        p.grad = grads[their_name(name)].clone()
        model.get_parameter(their_name(name)).grad = grads[their_name(name)].clone()
    run.optimizer.step()
    opt.step()
    after = dict(model.named_parameters())
    for name, p in named:
        torch.testing.assert_close(p, after[their_name(name)], rtol=0, atol=1e-7, msg=name)
        state = run.optimizer.state[p]
        torch.testing.assert_close(state["exp_avg_sq"], opt.state[after[their_name(name)]]["exp_avg_sq"], rtol=1e-6,
                                   atol=1e-12)
    run.scheduler.step()
    their_schedule = copy.deepcopy(their_schedule)
    their_schedule.optimizer = opt
    their_schedule.step()
    assert run.scheduler.get_last_lr()[0] == pytest.approx(their_schedule.get_last_lr()[0], rel=1e-12)


def test_resumes_and_trains_on(theirs, tmp_path, capsys):
    from training.loop import train
    overrides, folder, *_ = theirs
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + [f"training.checkpoint_dir={tmp_path / 'ours'}",
                                                                    f"training.resume_ckpt={folder / 'ckpt_100.000000.pt'}"])
    result = train(cfg, init_distributed("cpu"))
    out = capsys.readouterr().out
    assert "resumed from" in out and f"at step {STEPS} (a checkpoint of the reference's train.py)" in out
    assert "warning" not in out  # the same schedule: no learning-rate note
    assert result["step"] == TOTAL
    lines = [json.loads(line) for line in (tmp_path / "ours" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(STEPS + 1, TOTAL + 1))
    ours = torch.load(tmp_path / "ours" / f"ckpt_{TOTAL:08d}.pt", weights_only=True)
    assert sorted(ours["repa"]) and ours["optim_step"]["counts"]["applied"] == TOTAL


def test_fine_tunes_from_its_weights(theirs, tmp_path, capsys):
    from training.loop import setup
    overrides, folder, _, their_model, *_ = theirs
    for key in ("training.init_checkpoint", "training.resume_ckpt"):
        extra = ["training.reset_training_state=true"] if key == "training.resume_ckpt" else []
        cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + extra + [
            f"training.checkpoint_dir={tmp_path / key}", f"{key}={folder / 'ckpt_100.000000.pt'}"])
        run = setup(cfg, init_distributed("cpu"))
        assert run.step == 0 and not run.optimizer.state
        assert "REPA projectors taken from it" in capsys.readouterr().out
        theirs_now = dict(their_model.named_parameters())
        for name, p in run.repa.named_parameters():
            assert torch.equal(p, theirs_now[their_name(f"repa.{name}")])
    # another teacher block: the weights are taken, the projectors start afresh (said so)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + [
        "model.repa_config=2-2", f"training.checkpoint_dir={tmp_path / 'other'}",
        f"training.init_checkpoint={folder / 'ckpt_100.000000.pt'}"])
    setup(cfg, init_distributed("cpu"))
    out = capsys.readouterr().out
    assert "projectors start afresh" in out and "align teacher block 3" in out


@pytest.mark.parametrize("change, message", [
    (["model.repa_config=2-2"], "aligns teacher block 2"),
    (["training.enable_repa=false"], "set training.enable_repa=true"),
])
def test_resume_refuses_what_does_not_fit(theirs, tmp_path, change, message):
    from training.loop import setup
    overrides, folder, *_ = theirs
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + change + [
        f"training.checkpoint_dir={tmp_path / 'ours'}", f"training.resume_ckpt={folder}"])
    with pytest.raises(CheckpointError, match=message):
        setup(cfg, init_distributed("cpu"))


def test_resume_auto_in_their_folder(theirs, tmp_path):
    """Their train.py resumes from checkpoint_dir when resume_ckpt is empty: so does training.resume=auto."""
    from training.loop import setup
    overrides, folder, *_ = theirs
    run_dir = tmp_path / "run"
    shutil.copytree(folder, run_dir)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + [f"training.checkpoint_dir={run_dir}"])
    assert setup(cfg, init_distributed("cpu")).step == STEPS


def test_another_schedule_is_named(theirs, tmp_path, capsys):
    """Resumed under a longer run than theirs: the stored rate differs from this config's, and the start says so."""
    from training.loop import setup
    overrides, folder, *_ = theirs
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides + [
        f"training.train_steps={TOTAL * 10}", f"training.checkpoint_dir={tmp_path / 'ours'}", f"training.resume_ckpt={folder}"])
    setup(cfg, init_distributed("cpu"))
    assert "this config's schedule gives" in capsys.readouterr().out
