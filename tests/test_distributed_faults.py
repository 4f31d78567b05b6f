"""Runs across processes and nodes end cleanly: one resume choice for all ranks, a frozen rank ends the
run within training.dist_timeout_minutes, srun / mpirun without a rendezvous is refused, and
training.device=cuda without CUDA is an error."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.test_train import overrides, rooms  # noqa: F401 - rooms is a fixture
from utils.distributed import init_distributed, launch_env

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith(("SLURM_", "OMPI_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
ENV["OMP_NUM_THREADS"] = "1"


# --- srun / mpirun without torchrun -----------------------------------------------------------------

@pytest.mark.parametrize("names", [("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
                                   ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK")])
def test_srun_and_mpirun_ranks_are_mapped_when_a_rendezvous_is_set(names):
    env = {names[0]: "5", names[1]: "8", names[2]: "1", "MASTER_ADDR": "node001", "MASTER_PORT": "29500"}
    assert launch_env(env) == (5, 8, 1)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("5", "8", "1")  # for the env:// rendezvous


@pytest.mark.parametrize("names", [("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
                                   ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK")])
def test_several_tasks_without_a_rendezvous_are_refused(names):
    env = {names[0]: "1", names[1]: "4", names[2]: "1", "MASTER_ADDR": "node001"}
    with pytest.raises(RuntimeError, match=f"{names[1]}=4") as err:
        launch_env(env)
    assert "MASTER_PORT" in str(err.value) and "torch.distributed.run" in str(err.value)
    assert "--rdzv_endpoint" in str(err.value) and "RANK" not in env  # nothing half-set


def test_one_task_and_torchrun_variables_need_no_mapping():
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}) == (0, 1, 0)
    assert launch_env({}) == (0, 1, 0)
    # torchrun started inside an srun step: torchrun's own variables win
    assert launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_NTASKS": "2",
                       "SLURM_PROCID": "0"}) == (3, 4, 1)


def test_init_distributed_refuses_srun_tasks_without_rendezvous(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    with pytest.raises(RuntimeError, match="SLURM_NTASKS=2.*MASTER_ADDR and MASTER_PORT"):
        init_distributed("cpu")


# --- training.device=cuda without CUDA -----------------------------------------------------------------

def test_cuda_without_cuda_is_an_error_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="training.device=cuda: CUDA is not available"):
        init_distributed("cuda")
    with pytest.raises(ValueError, match="training.device='gpu'"):
        init_distributed("gpu")


def test_cuda_that_does_not_start_is_an_error_naming_the_key(monkeypatch):
    def broken(_):
        raise RuntimeError("CUDA driver initialization failed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", broken)
    with pytest.raises(RuntimeError, match="training.device=cuda: CUDA did not start.*driver initialization"):
        init_distributed("cuda")


def test_train_py_with_cuda_on_a_cpu_machine_exits_naming_the_key(monkeypatch, tmp_path):
    import train
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="training.device=cuda") as exit_:
        train.main(["--config", str(ROOT / "configs" / "tiny.yaml"), "training.device=cuda",
                    f"training.checkpoint_dir={tmp_path}"])
    assert "CPU" in str(exit_.value.code) and not list(tmp_path.iterdir())  # nothing trained


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="training.dist_timeout_minutes=0"):
        init_distributed("cpu", timeout_minutes=0)


# --- one resume choice, broadcast by rank 0 --------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys
    from types import SimpleNamespace
    sys.path.insert(0, {root!r})
    from training.checkpoints import resume_source
    from utils.distributed import cleanup, init_distributed
    dist = init_distributed("cpu", 0.5)
    here = sys.argv[1 + dist.rank]  # each rank its own working folder (its own node)
    os.chdir(here)
    training = SimpleNamespace(resume=sys.argv[3], resume_ckpt="", checkpoint_dir=os.getcwd(),
                               reset_training_state=False)
    try:
        source = resume_source(training, dist)
        out = {{"rank": dist.rank, "path": None if source is None else str(source[1]),
               "step": None if source is None else int(source[0]["step"])}}
    except Exception as err:
        out = {{"rank": dist.rank, "error": type(err).__name__ + ": " + str(err)}}
    with open(os.path.join(sys.argv[4], f"rank{{dist.rank}}.json"), "w") as f:
        json.dump(out, f)
    cleanup()
""")


def run_resume(tmp_path, node0, node1, resume):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(root=str(ROOT)))
    result = subprocess.run([*TORCHRUN, str(worker), str(node0), str(node1), resume, str(tmp_path)], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}


def fake_ckpt(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt_{step:08d}.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "optim_step": {}, "step": step}, path)
    return path


def test_every_rank_resumes_from_rank_0_s_choice(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    chosen = fake_ckpt(node0, 7)
    fake_ckpt(node1, 3)  # rank 1 alone would have picked step 3 (or step 9 below) from its own folder
    fake_ckpt(node1, 9).write_bytes(b"truncated")
    out = run_resume(tmp_path, node0, node1, "auto")
    # rank 0's choice, as the path rank 0 names it; rank 1 reads that file, not its own newest
    assert out[0] == {"rank": 0, "path": str(chosen), "step": 7}
    assert out[1] == {"rank": 1, "path": str(chosen), "step": 7}


def test_a_rank_that_cannot_read_the_chosen_file_stops_every_rank(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    fake_ckpt(node0, 7)
    node1.mkdir()  # the second node does not see the checkpoint (no shared storage)
    out = run_resume(tmp_path, node0, node1, "ckpt_00000007.pt")
    for rank in (0, 1):  # both ranks end with the error, none waits
        assert out[rank]["error"].startswith("CheckpointError"), out
        assert "rank(s) [1]" in out[rank]["error"] and "ckpt_00000007.pt" in out[rank]["error"]


def test_rank_0_s_error_reaches_every_rank(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir()
    fake_ckpt(node1, 5)  # rank 1 could read its own file of that name, but rank 0 decides
    out = run_resume(tmp_path, node0, node1, "ckpt_00000005.pt")
    assert out[0]["error"].startswith("FileNotFoundError") and "ckpt_00000005.pt" in out[0]["error"]
    assert out[1]["error"].startswith("FileNotFoundError") and "rank 1: rank 0" in out[1]["error"]


# --- a frozen rank ends the run within training.dist_timeout_minutes --------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _rank_of(pid: int) -> int | None:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    ranks = [int(e[5:]) for e in environ if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def test_a_frozen_rank_ends_the_run_within_the_timeout(rooms, tmp_path):  # noqa: F811
    cmd = [*TORCHRUN, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
           *overrides(rooms, tmp_path, "efficient_lvsm", "training.train_steps=100000",
                      "training.checkpoint_every=100000", "training.print_every=1",
                      "training.dist_timeout_minutes=0.2")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    frozen = None
    try:
        deadline = time.monotonic() + 120
        metrics = tmp_path / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()):  # rank 0 has logged its first step
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        workers = {_rank_of(p): p for p in _children(proc.pid)}
        frozen = workers[1]
        os.kill(frozen, signal.SIGSTOP)
        stopped_at = time.monotonic()
        output, _ = proc.communicate(timeout=60)  # 12 s of timeout, then torchrun ends the job
        took = time.monotonic() - stopped_at
    finally:
        if frozen is not None:
            try:
                os.kill(frozen, signal.SIGCONT)
            except ProcessLookupError:  # torchrun has killed it: the expected end
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "did not answer within training.dist_timeout_minutes=0.2" in output, output[-3000:]
    assert took < 60
    print(f"frozen rank: job ended {took:.1f} s after SIGSTOP (timeout 12 s)")


# --- scripts/train.sh: the multi-node form -------------------------------------------------------------

def _train_sh(tmp_path, **env):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    return subprocess.run(["bash", "scripts/train.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**ENV, "PY": str(fake), **env})


def test_train_sh_runs_the_multi_node_form_when_asked(tmp_path):
    out = _train_sh(tmp_path, NNODES="2", NODE_RANK="1", MASTER="node001:29500", NPROC="8")
    args = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr
    assert args[:12] == ["-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--rdzv_backend", "c10d",
                         "--rdzv_endpoint", "node001:29500", "--nproc_per_node", "8"]
    assert "--standalone" not in args
    single = _train_sh(tmp_path).stdout.splitlines()
    assert single[:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    half = _train_sh(tmp_path, NNODES="2", MASTER="node001:29500")
    assert half.returncode != 0 and "NODE_RANK" in half.stderr and not half.stdout
