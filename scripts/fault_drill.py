"""Fault drill: break real runs on purpose and report what was expected, what happened, what was lost.

    python -m scripts.fault_drill [--out experiments/fault_drill] [--only NAME ...]

Scenarios (each a real subprocess on the CPU, tiny model, synthetic rooms):
- kill_training: SIGKILL a training run mid-way, resume, compare with an uninterrupted run.
- kill_writes: SIGKILL a run that checkpoints every step, several times at random moments; every
  checkpoint left must load, and the run must resume each time.
- full_disk: the checkpoint folder on a 256 KiB tmpfs (needs root and mount; skipped otherwise).
- frozen_rank: two gloo processes, one SIGSTOPped; the job must end within its process-group timeout.
- killed_converter: SIGKILL the chunk converter's parent; its workers must exit, and a rerun resumes.
Prints a table and writes OUT/fault_drill.json.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32", "model.transformer.d=32",
        "model.transformer.d_head=8", "model.transformer.n_layer=1", "training.batch_size_per_gpu=2",
        "training.view_selector.min_frame_dist=3", "training.view_selector.max_frame_dist=8", "training.device=cpu",
        "training.print_every=1", "training.vis_every=0", "training.warmup=2", "training.wandb_mode=disabled"]


def train_cmd(data: Path, ckpt_dir: Path, *extra: str, launcher=(sys.executable,)) -> list[str]:
    return [*launcher, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "tiny.yaml"), *TINY,
            f"training.dataset_path={data / 'train' / 'full_list.txt'}", f"training.checkpoint_dir={ckpt_dir}", *extra]


def ckpts(folder: Path) -> list[Path]:
    return sorted(folder.glob("ckpt_*.pt"))


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def same_state(a: Path, b: Path) -> bool:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"]) and sa["step"] == sb["step"]


def kill_training(data: Path, out: Path) -> dict:
    killed, straight = out / "killed", out / "straight"
    args = ["training.checkpoint_every=2", "training.train_steps=400"]
    proc = subprocess.Popen(train_cmd(data, killed, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: len(ckpts(killed)) >= 2, 120)
    time.sleep(random.Random(0).uniform(0.0, 0.3))
    proc.kill()
    proc.wait()
    logged = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    last = torch.load(ckpts(killed)[-1], weights_only=True)["step"]
    stop = last + 2
    subprocess.run(train_cmd(data, killed, *args, "--max_steps", "2"), cwd=ROOT, capture_output=True, check=True)
    subprocess.run(train_cmd(data, straight, *args, "--max_steps", str(stop)), cwd=ROOT, capture_output=True,
                   check=True)
    equal = same_state(killed / f"ckpt_{stop:08d}.pt", straight / f"ckpt_{stop:08d}.pt")
    return {"expected": "resume from the last checkpoint; weights at the same step equal an uninterrupted run's",
            "observed": f"killed after logging step {max(logged)}, resumed at step {last}; weights at step {stop} "
                        + ("equal" if equal else "DIFFER"),
            "lost": f"{max(logged) - last} step(s) since the last checkpoint", "ok": equal}


def kill_writes(data: Path, out: Path, kills: int = 8) -> dict:
    folder, rng = out / "writes", random.Random(1)
    args = ["training.checkpoint_every=1", "training.train_steps=100000", "training.keep_checkpoints=2"]
    torn, during_write = [], 0
    for _ in range(kills):
        proc = subprocess.Popen(train_cmd(data, folder, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        newest = ckpts(folder)[-1].name if ckpts(folder) else ""
        wait_for(lambda: ckpts(folder) and ckpts(folder)[-1].name > newest, 120)  # training is under way
        time.sleep(rng.uniform(0.0, 0.4))  # a checkpoint is written every step: some kills land in a write
        proc.kill()
        proc.wait()
        during_write += bool(list(folder.glob(".ckpt_*.tmp")))
        for path in ckpts(folder):
            try:
                torch.load(path, weights_only=True)
            except Exception as err:  # noqa: BLE001 - any failure to load is what the drill looks for
                torn.append(f"{path.name}: {type(err).__name__}")
    step = torch.load(ckpts(folder)[-1], weights_only=True)["step"]
    return {"expected": "every checkpoint on disk loads; each restart resumes (a cut-off write leaves only a temp)",
            "observed": f"{kills} kills, {during_write} of them with a write in flight (a temp file left); "
                        f"newest step {step}; "
                        + (f"torn: {torn}" if torn else "every checkpoint loads"),
            "lost": "the steps since each kill's last checkpoint (1 at most)", "ok": not torn}


def full_disk(data: Path, out: Path) -> dict:
    """A 256 KiB tmpfs (no room for one checkpoint: stops before step 1), then a 1200 KiB one (room for
    the first checkpoint only: the second write fails, the first stays)."""
    seen, ok = [], True
    for size, steps in (("256k", 4), ("1200k", 4)):
        mount = out / f"disk_{size}"
        mount.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
        if done.returncode != 0:
            return {"expected": "an error naming the folder and the bytes needed", "ok": None, "lost": "-",
                    "observed": f"skipped: cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})"}
        try:
            run = subprocess.run(train_cmd(data, mount / "ckpt", f"training.train_steps={steps}",
                                           "training.checkpoint_every=1", "training.keep_checkpoints=0"),
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
            message = (run.stderr.strip().splitlines() or [""])[-1]
            kept = [p.name for p in ckpts(mount / "ckpt")]
            loads = all(torch.load(p, weights_only=True)["step"] for p in ckpts(mount / "ckpt"))
            ok &= run.returncode != 0 and str(mount) in message and "bytes" in message and loads
            seen.append(f"{size}: exit {run.returncode}, kept {kept or 'none'} ({message[:120]})")
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)
    return {"expected": "no room: stops before step 1; room for one checkpoint: the next write fails naming the "
                        "folder and the bytes, the older checkpoint stays and loads",
            "observed": " / ".join(seen), "lost": "the steps after the last checkpoint that fit", "ok": ok}


def frozen_rank(data: Path, out: Path) -> dict:
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    proc = subprocess.Popen(train_cmd(data, out / "frozen", "training.train_steps=100000", "training.checkpoint_every=1000",
                                      "training.dist_timeout_minutes=0.25", launcher=launcher),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    wait_for(lambda: (out / "frozen" / "metrics.jsonl").is_file(), 120)
    workers = [p for p in _children(proc.pid) if "train.py" in _cmdline(p)]
    frozen_at = time.time()
    if workers:
        os.kill(workers[-1], signal.SIGSTOP)
    try:
        output, _ = proc.communicate(timeout=180)
        ended = time.time() - frozen_at
        line = next((x for x in output.splitlines()[::-1] if "timeout" in x.lower() or "timed out" in x.lower()), "")
        return {"expected": "the job ends within its process-group timeout (15 s here), with a message",
                "observed": f"ended {ended:.0f} s after the SIGSTOP, exit {proc.returncode}: {line.strip()[:140]}",
                "lost": "the steps since the last checkpoint", "ok": proc.returncode != 0 and ended < 120}
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return {"expected": "the job ends within its process-group timeout", "observed": "still hanging after 180 s",
                "lost": "-", "ok": False}


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids += [int(entry.name), *_children(int(entry.name))]
    return kids


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def killed_converter(data: Path, out: Path) -> dict:
    from scripts.benchmark_data import write_chunk
    from data.scene_format import read_scene_list
    chunks = out / "chunks" / "train"
    scenes = read_scene_list(data / "train" / "full_list.txt")
    for i in range(4):
        write_chunk(scenes[2 * i:2 * i + 2], chunks / f"{i:06d}.torch")
    cmd = [sys.executable, "-m", "data.process_data", "--base_path", str(out / "chunks"), "--output_dir",
           str(out / "converted"), "--mode", "train", "--num_workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(_children(proc.pid)) >= 2, 60)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), 15)
    left = [p for p in workers if Path(f"/proc/{p}").exists() and "process_data" in _cmdline(p)]
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    listed = (out / "converted" / "train" / "full_list.txt")
    n = len(listed.read_text().split()) if listed.is_file() else 0
    return {"expected": "the workers exit with their parent; a rerun converts the rest and writes full_list.txt",
            "observed": f"{len(workers)} child processes, {len(left)} left after the kill; rerun exit "
                        f"{rerun.returncode}, {n} scenes listed", "lost": "nothing: finished scenes are kept",
            "ok": not left and rerun.returncode == 0 and n == 8}


SCENARIOS = {"kill_training": kill_training, "kill_writes": kill_writes, "full_disk": full_disk,
             "frozen_rank": frozen_rank, "killed_converter": killed_converter}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="experiments/fault_drill")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run these scenarios only")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    from data import synthetic
    synthetic.generate(out / "data", "rooms", 8, 1, frames=10, size=32, seed=0)
    rows = []
    for name in args.only or list(SCENARIOS):
        started = time.time()
        row = {"scenario": name, **SCENARIOS[name](out / "data", out / name)}
        row["seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print(f"{name}: {'ok' if row['ok'] else 'skipped' if row['ok'] is None else 'FAILED'} ({row['seconds']} s)",
              flush=True)
    (out / "fault_drill.json").write_text(json.dumps(rows, indent=1))
    print("\n| scenario | expected | observed | lost |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['expected']} | {r['observed']} | {r['lost']} |")
    return rows


if __name__ == "__main__":
    main()
