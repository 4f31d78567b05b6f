"""Training checkpoints: atomic writes, the last K kept, resume from the newest readable one.

A checkpoint `ckpt_<step:08d>.pt` holds `model` (the renderer's state dict, the key the reference
uses, so our files load wherever theirs do), `repa`, `optimizer`, `scheduler`, `optim_step`, `step`,
`rng` (python, numpy, torch and CUDA states of rank 0), `config`, `image_size` and `code_version`.
It is written to a temporary file in the same folder, flushed to disk, then renamed over: a kill at
any moment leaves either the old set of files or the new one, never a half-written checkpoint.
"""

import functools
import os
import random
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from model.checkpoint import CheckpointError, checkpoints, read_checkpoint, reference_checkpoints
from training.reference_ckpt import is_reference_training
from utils.config import ConfigError
from utils.distributed import agree_any, broadcast_object

REQUIRED = ("model", "optimizer", "scheduler", "optim_step", "step")


@functools.lru_cache(maxsize=None)  # the checkout does not change while a run goes on
def code_version() -> str:
    """`git describe` of this checkout, or "unknown" outside a git tree."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state() -> dict[str, Any]:
    """RNG states as plain data (loadable with weights_only=True: numpy's array becomes a tensor)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (ours counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (never a checkpoint, never the file of a
    process that still runs: its pid is in the name, .ckpt_<step>.pt.<pid>.tmp); returns them."""
    folder = Path(folder)
    stale = []
    for path in sorted(folder.glob(".ckpt_*.pt.*.tmp")) if folder.is_dir() else []:
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        stale.append(path)
    return stale


class RunFolderBusy(CheckpointError):
    """Another live training run holds the checkpoint folder's lock."""


class RunLock:
    """One training run per checkpoint folder: an exclusive lock on FOLDER/.lock (fcntl.flock), which the
    system releases when the process ends, however it ends (a killed run leaves nothing stuck). The file
    names the holder (pid, host, start time) for the refusal message. Where fcntl does not exist
    (Windows), no lock is taken."""

    NAME = ".lock"

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / self.NAME
        self._file = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "a process that wrote nothing yet"
            f.close()
            raise RunFolderBusy(f"training.checkpoint_dir={self.path.parent} is in use by another training run "
                                f"({holder}); wait for it to end, stop it, or choose another checkpoint_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a folder that is not writable)."""


def tensor_bytes(tree: Any) -> int:
    """Bytes of every tensor in a nested dict/list (the size of a checkpoint, roughly)."""
    if torch.is_tensor(tree):
        return tree.element_size() * tree.numel()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def checkpoint_bytes(modules) -> int:
    """Room a checkpoint of these modules needs, estimated before it exists: their state dicts three
    times over (weights + AdamW's two moments), plus 10% and 16 MiB for the rest of the payload."""
    weights = sum(tensor_bytes(m.state_dict()) for m in modules)
    return int(3 * weights * 1.1) + 16 * 2**20


def check_room(folder: str | Path, needed: int) -> None:
    """Before the first step: `folder` exists or can be made, takes a file, and has room for `needed`
    bytes (a checkpoint); else CheckpointWriteError naming the folder and the bytes."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_probe.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CheckpointWriteError(f"training.checkpoint_dir={folder}: not writable ({err})") from None
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CheckpointWriteError(f"training.checkpoint_dir={folder}: {free:,} bytes free, but a checkpoint needs "
                                   f"about {needed:,}; free some space or choose another folder")


def save_checkpoint(folder: str | Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write payload as folder/ckpt_<step>.pt atomically, then delete all but the newest `keep`.
    A failed write (full disk: torch.save reports it as a RuntimeError) leaves no temp file and every
    older checkpoint in place, and raises CheckpointWriteError naming the folder and the bytes needed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt_{step:08d}.pt"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(folder).free
        raise CheckpointWriteError(f"could not write {path.name} in {folder}: {str(err).strip()[:200]}; it needs "
                                   f"about {tensor_bytes(payload):,} bytes and {free:,} are free; older checkpoints "
                                   "are untouched") from err
    finally:
        tmp.unlink(missing_ok=True)
    if keep > 0:
        for old in checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def missing_training_keys(ckpt: dict) -> list[str]:
    """The keys a checkpoint lacks to be resumed: ours (REQUIRED), or none for a training checkpoint of
    the reference's train.py (training/reference_ckpt.py converts it)."""
    if is_reference_training(ckpt):
        return []
    return [k for k in REQUIRED if k not in ckpt]


def load_latest(folder: str | Path) -> Optional[tuple[dict[str, Any], Path]]:
    """The newest checkpoint in `folder` that reads and holds a training state, or None: ours
    (ckpt_<step>.pt), else the reference trainer's step checkpoints, newest first as it orders them.

    Unreadable or incomplete newer files are reported (a warning naming each) and passed over."""
    for path in [*reversed(checkpoints(folder)), *reversed(reference_checkpoints(folder))]:
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"resume: skipping unreadable checkpoint {path}: {err}")
            continue
        missing = missing_training_keys(ckpt)
        if missing:
            warnings.warn(f"resume: skipping {path}: not a training checkpoint (missing {missing})")
            continue
        return ckpt, path
    return None


def resume_source(training, dist=None) -> Optional[tuple[dict, Path]]:
    """The checkpoint a run starts from, or None; under torchrun the same file on every rank.

    Rank 0 chooses (as below) and broadcasts its choice, or its error, to the others, which then read
    that file; a rank that cannot read it fails the run on every rank (agreed by a collective, so none
    is left waiting) with an error naming the file and the rank(s). `dist`: a DistInfo, or None alone."""
    if dist is None or not dist.distributed:
        return _choose_resume(training)
    choice = error = source = own_error = None
    if dist.is_main:
        try:
            source = _choose_resume(training)
            choice = None if source is None else str(source[1])
        except (ConfigError, CheckpointError, FileNotFoundError) as err:
            error, own_error = (type(err).__name__, str(err)), err
    choice, error = broadcast_object((choice, error), dist)  # the others wait here, and learn of an error
    if error is not None:
        if own_error is not None:
            raise own_error
        kind = {"ConfigError": ConfigError, "FileNotFoundError": FileNotFoundError}.get(error[0], CheckpointError)
        raise kind(f"rank {dist.rank}: rank 0 found no checkpoint to resume from: {error[1]}")
    if choice is None:
        return None
    failure = ""
    if not dist.is_main:
        try:
            source = read_checkpoint(choice), Path(choice)
        except (CheckpointError, FileNotFoundError) as err:
            failure = str(err)
    failed = torch.zeros(dist.world_size, dtype=torch.bool)
    failed[dist.rank] = bool(failure)
    bad = [r for r, f in enumerate(agree_any(failed, dist)) if f]
    if bad:
        mine = f"; here: {failure}" if failure else ""
        raise CheckpointError(f"resume: rank(s) {bad} of {dist.world_size} cannot read {choice}, the checkpoint rank 0 "
                              f"chose (is the folder on storage every node sees?){mine}")
    return source


def _choose_resume(training) -> Optional[tuple[dict, Path]]:
    """The checkpoint a run starts from, or None (read on this process alone).

    training.resume: "auto" (newest readable checkpoint in checkpoint_dir), "none", or a file holding a
    full training state (ours, or one written by the reference's train.py: training/reference_ckpt.py).
    The reference's training.resume_ckpt (a file, or a folder whose newest checkpoint is taken)
    replaces checkpoint_dir as the place to resume from. With training.reset_training_state only the
    weights are taken (the caller checks), so any checkpoint with a model will do."""
    t = training
    if t.resume_ckpt and t.resume != "auto":
        raise ConfigError(f"training.resume_ckpt={t.resume_ckpt!r} and training.resume={t.resume!r} both name "
                          "where to resume from: set one")
    if t.resume == "none":
        return None
    where, key = (t.resume_ckpt, "training.resume_ckpt") if t.resume_ckpt else (t.resume, "training.resume")
    if where == "auto" or Path(where).is_dir():
        folder = t.checkpoint_dir if where == "auto" else where
        found = load_latest(folder)
        others = sorted(p.name for p in Path(folder).glob("*.pt")) if Path(folder).is_dir() else []
        if found is None and others and where != "auto":
            raise CheckpointError(f"{key}={where}: no training checkpoint there, of this trainer (ckpt_<step>.pt) or "
                                  f"of the reference's ({', '.join(others[:5])}); name one file to start from its "
                                  "weights, with training.reset_training_state=true")
        return found
    path = Path(where)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: checkpoint not found: {path}")
    ckpt = read_checkpoint(path)
    missing = missing_training_keys(ckpt)
    if missing and not t.reset_training_state:
        raise CheckpointError(f"{key}={path}: not a training checkpoint of this trainer or of the reference's "
                              f"(missing {missing}), so its "
                              "optimizer and schedule cannot be resumed; to start from its weights, set "
                              "training.reset_training_state=true (or use training.init_checkpoint)")
    return ckpt, path
