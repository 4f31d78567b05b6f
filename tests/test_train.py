"""The trainer on CPU: each model learns a few steps, resume is exact, bad steps are skipped, errors name the culprit."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from configs.schema import load_config
from data import synthetic
from tests.conftest import ROOT
from training.checkpoints import checkpoints
from training.loop import train
from training.optim import OptimStep, lr_factor, param_groups
from utils.distributed import init_distributed

TINY_MODELS = {
    "efficient_lvsm": ["model.transformer.n_layer=2"],
    "lvsm_decoder_only": ["model.transformer.n_layer=2"],
    "lvsm_encoder_decoder": ["model.transformer.encoder_n_layer=1", "model.transformer.decoder_n_layer=1",
                             "model.transformer.n_latent_vectors=8"],
}


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    out = tmp_path_factory.mktemp("rooms")
    synthetic.generate(out, "rooms", 8, 2, frames=10, size=32, seed=0)
    return out


def overrides(rooms, ckpt_dir, name="efficient_lvsm", *extra):
    return [f"model.class_name={name}", "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32",
            "model.transformer.d=32", "model.transformer.d_head=8", *TINY_MODELS[name],
            f"training.dataset_path={rooms / 'train' / 'full_list.txt'}", f"training.checkpoint_dir={ckpt_dir}",
            "training.batch_size_per_gpu=2", "training.view_selector.min_frame_dist=3",
            "training.view_selector.max_frame_dist=8", "training.device=cpu", "training.print_every=1",
            "training.vis_every=2", "training.warmup=2", "training.train_steps=6", *extra]


def run_train(args, max_steps=None):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", args)
    return train(cfg, init_distributed("cpu"), max_steps=max_steps)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_each_model_trains_and_checkpoints(rooms, tmp_path, name):
    result = run_train(overrides(rooms, tmp_path, name, "training.train_steps=4", "training.checkpoint_every=2"))
    assert result["step"] == 4 and result["counts"]["applied"] == 4
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    ckpt = torch.load(checkpoints(tmp_path)[-1], weights_only=True)
    assert ckpt["step"] == 4 and ckpt["config"]["model"]["class_name"] == name and ckpt["image_size"] == 32
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in lines)
    assert (tmp_path / "images" / "step_00000002.png").is_file()


def _state(path):
    return torch.load(path, weights_only=True)


def _same_training_state(a, b):
    for key in ("model", "optimizer"):
        flat_a, flat_b = _flatten(a[key]), _flatten(b[key])
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]), f"{key}.{k} differs"
    assert a["scheduler"] == b["scheduler"] and a["step"] == b["step"]


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items() if isinstance(tree, dict) else enumerate(tree):
        if isinstance(v, (dict, list)):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif torch.is_tensor(v):
            out[f"{prefix}{k}"] = v
    return out


def test_resume_is_exact(rooms, tmp_path):
    extra = ("training.checkpoint_every=3", "training.grad_accum_steps=2", "training.use_view_masking=true",
             "training.view_min=1", "training.view_max=2")
    run_train(overrides(rooms, tmp_path / "straight", "efficient_lvsm", *extra))
    run_train(overrides(rooms, tmp_path / "resumed", "efficient_lvsm", *extra), max_steps=3)
    assert [p.name for p in checkpoints(tmp_path / "resumed")] == ["ckpt_00000003.pt"]
    result = run_train(overrides(rooms, tmp_path / "resumed", "efficient_lvsm", *extra))  # resume=auto
    assert result["step"] == 6
    _same_training_state(_state(tmp_path / "straight" / "ckpt_00000006.pt"),
                         _state(tmp_path / "resumed" / "ckpt_00000006.pt"))


def test_kill_and_resume_matches_an_uninterrupted_run(rooms, tmp_path):
    """SIGKILL a real training process mid-run; resume=auto loses only the steps since its last checkpoint."""
    args = overrides(rooms, tmp_path / "killed", "efficient_lvsm", "training.checkpoint_every=2",
                     "training.train_steps=400", "training.scheduler_type=cosine")
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "tiny.yaml"), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(checkpoints(tmp_path / "killed")) < 2 and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    written = checkpoints(tmp_path / "killed")
    assert written and all(torch.load(p, weights_only=True)["step"] for p in written)  # no torn file
    last = _state(written[-1])["step"]
    stop = last + 2
    resumed = run_train(args, max_steps=stop - last)  # resume=auto
    assert resumed["step"] == stop
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # a write cut off by the kill is cleared
    straight = overrides(rooms, tmp_path / "straight", "efficient_lvsm", "training.checkpoint_every=2",
                         "training.train_steps=400", "training.scheduler_type=cosine")
    run_train(straight, max_steps=stop)
    _same_training_state(_state(tmp_path / "straight" / f"ckpt_{stop:08d}.pt"),
                         _state(tmp_path / "killed" / f"ckpt_{stop:08d}.pt"))


def test_corrupt_newest_checkpoint_falls_back(rooms, tmp_path):
    run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.checkpoint_every=2", "training.train_steps=4"))
    (tmp_path / "ckpt_00000004.pt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="ckpt_00000004.pt"):
        result = run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.checkpoint_every=2",
                                     "training.train_steps=4"))
    assert result["step"] == 4 and result["counts"]["applied"] == 4  # steps 3-4 redone from step 2


def _poison_second_loss(monkeypatch):
    """The loss of the second forward pass becomes NaN."""
    from training import losses
    original = losses.RenderLoss.forward
    calls = {"n": 0}

    def poisoned(self, pred, target):
        calls["n"] += 1
        total, parts = original(self, pred, target)
        return (total * float("nan") if calls["n"] == 2 else total), parts

    monkeypatch.setattr(losses.RenderLoss, "forward", poisoned)


def test_nonfinite_loss_step_is_skipped(rooms, tmp_path, monkeypatch):
    _poison_second_loss(monkeypatch)
    result = run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=3"))
    assert result["counts"] == {"applied": 2, "skipped_nonfinite": 1, "skipped_spike": 0}
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["steps_skipped_nonfinite"] == 1
    ckpt = torch.load(checkpoints(tmp_path)[-1], weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_nonfinite_steps_reference(rooms, tmp_path, monkeypatch):
    """training.nonfinite_steps=reference: a non-finite loss holds the update and the schedule (the
    reference's train.py); the next step's gradients, NaN where they met the held ones, are zeroed
    there and applied."""
    _poison_second_loss(monkeypatch)
    result = run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=3",
                                 "training.nonfinite_steps=reference"))
    assert result["counts"] == {"applied": 2, "skipped_nonfinite": 1, "skipped_spike": 0}
    ckpt = torch.load(checkpoints(tmp_path)[-1], weights_only=True)
    assert ckpt["step"] == 3 and ckpt["scheduler"]["last_epoch"] == 2  # the held step did not advance it
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_optim_step_reference_sanitizes_and_holds():
    from utils.distributed import DistInfo
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["training.grad_clip_norm=1.0", "training.nonfinite_steps=reference",
                                                       "training.allowed_gradnorm_factor=5"]).training
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    step = OptimStep(cfg, [w], opt, torch.device("cpu"), DistInfo(0, 1, 0, torch.device("cpu")))
    w.grad = torch.tensor([float("nan"), float("inf"), 0.5])
    applied, norm = step.step(torch.tensor(1.0))
    assert applied and not step.held and w.grad is None
    assert norm.item() == pytest.approx(0.5, rel=1e-9)  # of the sanitized gradients [0, 1e-6, 0.5]
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 1.0 - 1e-7, 0.95]), rtol=0, atol=1e-9)
    w.grad = torch.ones(3)
    applied, _ = step.step(torch.tensor(float("nan")))
    assert not applied and step.held and torch.equal(w.grad, torch.ones(3))  # held: gradients kept
    assert step.counts == {"applied": 1, "skipped_nonfinite": 1, "skipped_spike": 0}
    with pytest.raises(ValueError, match="training.nonfinite_steps"):
        OptimStep(load_config(ROOT / "configs" / "tiny.yaml", ["training.nonfinite_steps=zero"]).training, [w], opt,
                  torch.device("cpu"), DistInfo(0, 1, 0, torch.device("cpu")))


def test_optim_step_guards():
    from utils.distributed import DistInfo
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["training.grad_clip_norm=1.0",
                                                       "training.allowed_gradnorm_factor=5"]).training
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    step = OptimStep(cfg, [w], opt, torch.device("cpu"), DistInfo(0, 1, 0, torch.device("cpu")))
    for scale, applied in ((100.0, False), (2.0, True), (float("inf"), False)):
        before = w.detach().clone()
        loss = (w * scale).sum()
        step.backward(loss)
        ok, norm = step.step(loss.detach())
        assert ok == applied and w.grad is None
        assert torch.equal(w, before) != applied
    assert step.counts == {"applied": 1, "skipped_nonfinite": 1, "skipped_spike": 1}
    assert norm.item() == float("inf") or not torch.isfinite(norm)


def test_schedule_and_param_groups():
    assert lr_factor(0, 10, 100, "cosine") == 0.0 and lr_factor(1, 10, 100, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(55, 10, 100, "constant") == 1.0
    # wsd: 1 until the last 20% of the steps, then a line to 0; a longer run takes the same steps until then
    assert [lr_factor(s, 10, 100, "wsd") for s in (5, 10, 80, 90, 100)] == pytest.approx([0.5, 1, 1, 0.5, 0])
    assert all(lr_factor(s, 10, 100, "wsd") == lr_factor(s, 10, 150, "wsd") for s in range(81))
    assert lr_factor(140, 10, 150, "wsd", decay_fraction=0.5) == pytest.approx(10 / 75)
    for bad in ("0", "1.5"):
        with pytest.raises(Exception, match="decay_fraction"):
            load_config(ROOT / "configs" / "tiny.yaml", [f"training.decay_fraction={bad}"])
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups([model], 0.05)
    assert [p.shape for p in decay["params"]] == [(4, 4)] and len(no_decay["params"]) == 3
    assert no_decay["weight_decay"] == 0.0


def test_bad_inputs_are_named(rooms, tmp_path):
    with pytest.raises(FileNotFoundError, match="training.dataset_path"):
        run_train(overrides(rooms, tmp_path, "efficient_lvsm", f"training.dataset_path={tmp_path / 'none.txt'}"))
    from utils.config import ConfigError
    with pytest.raises(ConfigError, match="perceptual_weights_path"):
        run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.perceptual_loss_weight=0.5"))
    run_train(overrides(rooms, tmp_path / "dec", "lvsm_decoder_only", "training.train_steps=2",
                        "training.checkpoint_every=2"))
    from model.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="lvsm_decoder_only"):
        run_train(overrides(rooms, tmp_path / "eff", "efficient_lvsm", "training.resume=none",
                            f"training.init_checkpoint={checkpoints(tmp_path / 'dec')[-1]}"))
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(tmp_path / "missing.yaml")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "missing.yaml" in result.stderr


def test_torchrun_two_processes_gloo(rooms, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
           *overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=3", "training.checkpoint_every=3")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout and "effective batch 4" in result.stdout
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt_00000003.pt"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # rank 0 alone logs


def test_train_log_without_wandb_key_logs_locally(tmp_path, monkeypatch):
    from training.log import TrainLog
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    training = load_config(ROOT / "configs" / "tiny.yaml", [f"training.api_key_path={tmp_path / 'no_key'}"]).training
    with pytest.warns(UserWarning, match="no_key"):
        log = TrainLog(tmp_path, training, {}, enabled=True)
    assert log.wandb is None  # "auto" without a key: off, and training goes on
    log.metrics(3, {"loss": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "loss": 0.5}
    bad = load_config(ROOT / "configs" / "tiny.yaml", ["training.wandb_mode=sometimes"]).training
    with pytest.raises(ValueError, match="training.wandb_mode"):
        TrainLog(tmp_path, bad, {}, enabled=True)


def test_broken_scenes_are_skipped_and_counted(tmp_path):
    synthetic.generate(tmp_path / "data", "rooms", 8, 0, frames=10, size=32, seed=0)
    for i in range(2, 8):  # six of eight scenes have unreadable images
        for image in (tmp_path / "data" / "train" / "images" / f"rooms_{i:05d}").glob("*.png"):
            image.write_bytes(b"junk")
    with pytest.warns(UserWarning, match="skipping scene"):
        run_train(overrides(tmp_path / "data", tmp_path / "run", "efficient_lvsm", "training.train_steps=3"))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = [r["skipped_scenes"] for r in lines]
    assert counts == sorted(counts) and counts[-1] > 0  # cumulative, and logged


def test_full_disk_names_the_folder_and_keeps_older_checkpoints(rooms, tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError from its zip writer: the error names the folder
    and the bytes, no temp file stays, and the checkpoints already written are untouched."""
    import training.checkpoints as tc
    run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=2", "training.checkpoint_every=1"))

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 257920 vs 257808")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(tc.CheckpointWriteError, match=r"ckpt_00000003.pt in .* needs about [\d,]+ bytes"):
        run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=3", "training.checkpoint_every=1"))
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt_00000001.pt", "ckpt_00000002.pt"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_no_room_for_a_checkpoint_stops_before_the_first_step(rooms, tmp_path, monkeypatch):
    import shutil

    import training.checkpoints as tc
    monkeypatch.setattr(tc.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(tc.CheckpointWriteError, match=r"training.checkpoint_dir=.*: 1,000 bytes free"):
        run_train(overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=2"))
    metrics = tmp_path / "metrics.jsonl"
    assert not checkpoints(tmp_path) and (not metrics.exists() or not metrics.read_text().strip())  # no step taken


def test_train_seconds_add_up_over_resumes(rooms, tmp_path):
    """Checkpoints carry the run's training time, resumes summed; every logged line has it too."""
    args = overrides(rooms, tmp_path, "efficient_lvsm", "training.checkpoint_every=3")
    run_train(args, max_steps=3)
    first = _state(checkpoints(tmp_path)[-1])["train_seconds"]
    run_train(args)
    second = _state(checkpoints(tmp_path)[-1])["train_seconds"]
    assert 0 < first < second
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[3]["train_seconds"] > first  # the resumed process counts on from the checkpoint's time


def test_heldout_evaluation_takes_its_own_input_view_count(rooms, tmp_path, monkeypatch):
    """training.eval_input_views: held-out PSNR from that many inputs while training draws 1 to 2."""
    import training.loop as loop

    seen = []
    real = loop.evaluate_scenes

    def spy(cfg, *args, **kwargs):
        seen.append(cfg.training.num_input_views)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_scenes", spy)
    extra = [f"training.eval_dataset_path={rooms / 'test' / 'full_list.txt'}",
             f"training.eval_index_path={rooms / 'test' / 'evaluation_index.json'}", "training.eval_every=2",
             "training.use_view_masking=true", "training.view_min=1", "training.view_max=2",
             "training.train_steps=2"]
    run_train(overrides(rooms, tmp_path / "a", "efficient_lvsm", *extra, "training.eval_input_views=1"))
    run_train(overrides(rooms, tmp_path / "b", "efficient_lvsm", *extra))
    assert seen == [1, 2]
    with pytest.raises(Exception, match="eval_input_views"):
        load_config(ROOT / "configs" / "tiny.yaml", ["training.eval_input_views=0"])
