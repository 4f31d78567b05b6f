"""Training fails before its first step, not after it: config values at load, room for a checkpoint,
a full disk mid-write, init_checkpoint against a resume, and a resumed run's log and RNG states."""

import errno
import os
import json
import shutil

import numpy as np
import pytest
import torch

import training.checkpoints as tc
from configs.schema import config_from_dict, load_config
from tests.conftest import ROOT
from tests.test_train import _same_training_state, _state, overrides, rooms, run_train  # noqa: F401 (fixture)
from training.log import TrainLog
from training.loop import init_or_resume_note
from utils.config import ConfigError

TINY = ROOT / "configs" / "tiny.yaml"


# ----------------------------------------------------------------------------- config values at load

@pytest.mark.parametrize("bad", [
    "training.checkpoint_every=0", "training.checkpoint_every=-5", "training.print_every=0",
    "training.batch_size_per_gpu=0", "training.train_steps=-1", "training.wandb_log_every=0",
    "training.grad_accum_steps=0", "training.vis_every=-1", "training.eval_every=-2", "training.train_time=0",
    "training.keep_checkpoints=-1"])
def test_counts_out_of_range_are_named_at_load(bad):
    key, value = bad.split("=")
    with pytest.raises(ConfigError, match=rf"{key}={value}(\.0)? must be"):
        load_config(TINY, [bad])


def test_zero_means_never_where_it_does():
    cfg = load_config(TINY, ["training.vis_every=0", "training.eval_every=0", "training.keep_checkpoints=0"])
    assert (cfg.training.vis_every, cfg.training.eval_every, cfg.training.keep_checkpoints) == (0, 0, 0)


@pytest.mark.parametrize("device, ok", [(None, True), ("cpu", True), ("cuda", True), ("cuda:3", True),
                                        ("gpu", False), ("cuda:x", False), ("CPU", False), ("cuda:", False)])
def test_device_is_checked_at_load(device, ok):
    data = {"training": {"device": device}}
    if ok:
        assert config_from_dict(data).training.device == device
    else:
        with pytest.raises(ConfigError, match=rf"training.device='{device}'"):
            config_from_dict(data)


@pytest.mark.parametrize("section, size, patch, near", [("image_tokenizer", 64, 7, "63 or 70"),
                                                        ("target_pose_tokenizer", 60, 8, "56 or 64")])
def test_image_size_must_be_a_multiple_of_the_patch(section, size, patch, near):
    args = [f"model.{section}.image_size={size}", f"model.{section}.patch_size={patch}"]
    with pytest.raises(ConfigError, match=rf"model.{section}.image_size={size} is not a multiple of "
                                          rf"model.{section}.patch_size={patch}.*{near}"):
        load_config(TINY, args)
    # a config stored in a checkpoint goes through the same check (inference.py and the tools)
    with pytest.raises(ConfigError, match=f"stored: model.{section}.image_size={size}"):
        config_from_dict({"model": {section: {"image_size": size, "patch_size": patch}}}, where="stored")


# ----------------------------------------------------------------------------- room and a full disk

def test_room_estimate_covers_model_and_adamw_state_with_a_margin(tmp_path, monkeypatch):
    model = torch.nn.Linear(100, 100)  # 10,100 float32 parameters: 40,400 bytes
    needed = tc.checkpoint_bytes([model])
    assert needed > 3 * 40_400
    free = {"n": 3 * 40_400}  # weights and two moments, but no margin: refused

    monkeypatch.setattr(tc.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, free["n"]))
    with pytest.raises(tc.CheckpointWriteError, match=rf"checkpoint_dir={tmp_path}: 121,200 bytes free.*{needed:,}"):
        tc.check_room(tmp_path, needed)
    free["n"] = needed
    tc.check_room(tmp_path, needed)
    assert not list(tmp_path.iterdir())  # the write probe is gone


def test_unwritable_checkpoint_folder_is_named_before_the_first_step(rooms, tmp_path):  # noqa: F811
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(tc.CheckpointWriteError, match=rf"training.checkpoint_dir={blocker / 'run'}: not writable"):
        run_train(overrides(rooms, blocker / "run"))


def test_full_disk_during_a_write_names_folder_and_bytes_and_keeps_older(tmp_path, monkeypatch):
    payload = {"model": {"w": torch.zeros(1000)}, "step": 0}  # 4,000 bytes of tensors
    for step in (1, 2):
        tc.save_checkpoint(tmp_path, step, {**payload, "step": step}, keep=2)

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(tc.CheckpointWriteError) as err:
        tc.save_checkpoint(tmp_path, 3, {**payload, "step": 3}, keep=2)
    message = str(err.value)
    assert f"ckpt_00000003.pt in {tmp_path}" in message and "No space left on device" in message
    assert "needs about 4,000 bytes" in message
    assert [p.name for p in tc.checkpoints(tmp_path)] == ["ckpt_00000001.pt", "ckpt_00000002.pt"]
    assert [torch.load(p, weights_only=True)["step"] for p in tc.checkpoints(tmp_path)] == [1, 2]
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- init_checkpoint against a resume

def test_init_checkpoint_note_says_which_one_wins(tmp_path):
    def note(*args):
        return init_or_resume_note(load_config(TINY, [f"training.checkpoint_dir={tmp_path}", *args]).training)
    assert note() is None and note("training.init_checkpoint=w.pt") is None  # nothing to resume: init is read
    (tmp_path / "ckpt_00000004.pt").write_bytes(b"")
    (tmp_path / "ckpt_00000008.pt").write_bytes(b"")
    said = note("training.init_checkpoint=w.pt")
    assert "init_checkpoint=w.pt is not used" in said and "2 checkpoint(s), the newest ckpt_00000008.pt" in said
    assert note("training.init_checkpoint=w.pt", "training.resume=none") is None
    assert "training.resume_ckpt=old/ckpt.pt" in note("training.init_checkpoint=w.pt", "training.resume_ckpt=old/ckpt.pt")
    assert note() is None


def test_init_checkpoint_with_checkpoints_present_is_announced_at_start(rooms, tmp_path, capsys):  # noqa: F811
    run_train(overrides(rooms, tmp_path / "a", "efficient_lvsm", "training.train_steps=1"))
    weights = tc.checkpoints(tmp_path / "a")[-1]
    run_train(overrides(rooms, tmp_path / "b", "efficient_lvsm", "training.train_steps=1"))
    capsys.readouterr()
    run_train(overrides(rooms, tmp_path / "b", "efficient_lvsm", "training.train_steps=2",
                        f"training.init_checkpoint={weights}"))
    out = capsys.readouterr().out
    assert f"init_checkpoint={weights} is not used" in out and "resumed from" in out
    assert out.index("is not used") < out.index("resumed from")


# ----------------------------------------------------------------------------- a resumed run's log and RNG

def _same_rng(a, b):
    assert a["python"] == b["python"]
    assert a["numpy"]["kind"] == b["numpy"]["kind"] and a["numpy"]["pos"] == b["numpy"]["pos"]
    assert torch.equal(a["numpy"]["keys"], b["numpy"]["keys"])
    assert torch.equal(a["torch"], b["torch"])
    assert ("cuda" in a) == ("cuda" in b)


def test_resumed_run_logs_each_step_once_and_stores_the_same_rng(rooms, tmp_path, capsys):  # noqa: F811
    extra = ("training.checkpoint_every=3", "training.keep_checkpoints=0", "training.vis_every=0")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(overrides(rooms, straight, "efficient_lvsm", *extra))
    run_train(overrides(rooms, killed, "efficient_lvsm", *extra), max_steps=5)  # logs 1-5, saves 3 and 5
    (killed / "ckpt_00000005.pt").unlink()  # as if killed after logging step 5, last saved at 3
    capsys.readouterr()
    assert run_train(overrides(rooms, killed, "efficient_lvsm", *extra))["step"] == 6
    assert "moved 2 line(s) after step 3" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [json.loads(line)["step"] for line in (killed / "metrics.dropped.jsonl").read_text().splitlines()] == [4, 5]
    for step in (3, 6):
        a, b = _state(straight / f"ckpt_{step:08d}.pt"), _state(killed / f"ckpt_{step:08d}.pt")
        _same_training_state(a, b)
        _same_rng(a["rng"], b["rng"])


def test_drop_after_keeps_steps_up_to_the_resume_and_moves_the_rest(tmp_path):
    log = TrainLog(tmp_path, load_config(TINY, ["training.wandb_mode=disabled"]).training, {})
    for step in (1, 2, 2, 3):  # step 2 twice: its training line and an eval line
        log.metrics(step, {"loss": float(step)})
    with open(log.metrics_path, "a") as f:
        f.write('{"step": 4, "lo')  # torn by a kill
    assert log.drop_after(2) == 2
    assert [json.loads(x)["step"] for x in log.metrics_path.read_text().splitlines()] == [1, 2, 2]
    moved = log.dropped_path.read_text().splitlines()
    assert json.loads(moved[0]) == {"step": 3, "loss": 3.0} and moved[1] == '{"step": 4, "lo'
    assert log.drop_after(2) == 0 and not list(tmp_path.glob(".*.tmp"))
    assert np.isclose(json.loads(log.metrics_path.read_text().splitlines()[0])["loss"], 1.0)


def test_one_run_per_checkpoint_folder(tmp_path):
    """A second start in a folder a live run holds is refused, naming the holder; a killed holder leaves
    nothing stuck; a temporary file of a live process is never removed as stale."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from training.checkpoints import RunFolderBusy, RunLock, remove_stale_temps
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusy, match=f"checkpoint_dir={tmp_path} is in use by another training run "
                                            f"\\(pid {os.getpid()} on"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from training.checkpoints import RunLock; "
                               f"lock = RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid} on"):
            RunLock(tmp_path).acquire()
        live = tmp_path / f".ckpt_00000002.pt.{holder.pid}.tmp"
        live.write_bytes(b"being written")
        dead = tmp_path / ".ckpt_00000001.pt.999999999.tmp"
        dead.write_bytes(b"left by a killed run")
        assert remove_stale_temps(tmp_path) == [dead] and live.is_file()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    RunLock(tmp_path).acquire().release()  # the killed holder's lock went with it


def test_a_second_training_start_in_a_live_runs_folder_is_refused(rooms, tmp_path):
    """train.py's setup takes the lock before it touches the folder: no config.yaml rotated, no temp removed."""
    from training.checkpoints import RunFolderBusy
    from training.loop import setup
    from utils.distributed import init_distributed
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides(rooms, tmp_path))
    first = setup(cfg, init_distributed("cpu"))
    config_before = (tmp_path / "config.yaml").read_text()
    inflight = tmp_path / f".ckpt_00000002.pt.{os.getpid()}.tmp"
    inflight.write_bytes(b"being written")
    with pytest.raises(RunFolderBusy, match="in use by another training run"):
        setup(cfg, init_distributed("cpu"))
    assert inflight.is_file() and (tmp_path / "config.yaml").read_text() == config_before
    first.lock.release()
