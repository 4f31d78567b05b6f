"""Process-group setup for one process or `torchrun` (one or many nodes), and rank-agreed decisions.

    dist = init_distributed()      # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    if dist.is_main: ...           # rank 0 alone logs and writes files
    skip, = agree_any(bad, dist)   # every rank takes the same decision

NCCL on GPU, gloo on CPU. Without torchrun's variables this is a single process and every helper is
a no-op, so the same training code runs on a laptop. Under `srun` or `mpirun` (no torchrun), the
launcher's rank variables are taken when MASTER_ADDR and MASTER_PORT name the rendezvous; several tasks
without one are refused, never run as independent copies writing one folder. A collective that waits
longer than `timeout_minutes` (training.dist_timeout_minutes) ends the run: a frozen rank cannot hang it.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int, environ=None) -> int:
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


# launcher -> (rank, world size, local rank) variables, for runs started without torchrun
LAUNCHERS = {"srun": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
             "mpirun": ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK")}
TORCHRUN_HINT = ("python -m torch.distributed.run --nnodes N --node_rank I --nproc_per_node GPUS "
                 "--rdzv_backend c10d --rdzv_endpoint FIRST_NODE_ADDRESS:29500 train.py --config ...")


def launch_env(environ=None) -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process: torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else
    srun's or mpirun's own variables when MASTER_ADDR and MASTER_PORT are set (they are then copied to
    RANK / WORLD_SIZE / LOCAL_RANK for the env:// rendezvous). Several tasks with no rendezvous is an
    error: they would train as independent single-process runs writing one checkpoint folder."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or "RANK" in env:
        return _env_int("RANK", 0, env), _env_int("WORLD_SIZE", 1, env), _env_int("LOCAL_RANK", 0, env)
    for launcher, (rank_var, size_var, local_var) in LAUNCHERS.items():
        if size_var not in env:
            continue
        world = _env_int(size_var, 1, env)
        if world <= 1:
            return 0, 1, 0
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise RuntimeError(f"{size_var}={world}: started by {launcher} as {world} tasks, but "
                               f"{' and '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not set, so the tasks cannot meet and would "
                               f"train as {world} independent runs writing one folder; set MASTER_ADDR (the first "
                               "node's address) and MASTER_PORT, or launch one task per node with "
                               f"`{TORCHRUN_HINT}`")
        rank, local_rank = _env_int(rank_var, 0, env), _env_int(local_var, 0, env)
        if not 0 <= rank < world:
            raise RuntimeError(f"{rank_var}={rank} is outside 0..{world - 1} ({size_var}={world})")
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
        return rank, world, local_rank
    return 0, 1, 0


def init_distributed(device: str | None = None, timeout_minutes: float = 60) -> DistInfo:
    """Join the process group torchrun (or srun / mpirun, see launch_env) describes, if any, and pick
    this rank's device.

    `device`: training.device, "cpu", "cuda" or None (CUDA when available); "cuda" where CUDA does not
    start is an error, never a CPU run. `timeout_minutes`: training.dist_timeout_minutes, how long a
    collective waits for the other ranks before the run ends with an error."""
    rank, world, local_rank = launch_env()
    if device is not None and device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"training.device={device!r}: use cpu or cuda")
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"training.device={device}: CUDA is not available on this machine (rank {rank}): "
                               "no GPU, no driver, or a CPU-only PyTorch; set training.device=cpu to train on CPU")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank}: LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} "
                               "GPU(s); start at most one process per GPU (--nproc_per_node)")
        try:
            torch.cuda.set_device(local_rank)
            torch.zeros(1, device=f"cuda:{local_rank}")  # CUDA starts here, or fails
        except RuntimeError as err:
            raise RuntimeError(f"training.device={device or 'cuda'}: CUDA did not start on GPU {local_rank} "
                               f"(rank {rank}): {err}") from err
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if timeout_minutes <= 0:
        raise ValueError(f"training.dist_timeout_minutes={timeout_minutes}: must be above 0")
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                 timeout=timedelta(minutes=timeout_minutes), device_id=dev if use_cuda else None)
    return DistInfo(rank, world, local_rank, dev)


def broadcast_object(obj, dist: DistInfo):
    """Rank 0's `obj` (any picklable value) on every rank; `obj` itself if single-process."""
    if not dist.distributed:
        return obj
    box = [obj if dist.is_main else None]
    tdist.broadcast_object_list(box, src=0, device=dist.device if dist.device.type == "cuda" else None)
    return box[0]


def cleanup() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """The mean of `t` over ranks (a copy; `t` itself if single-process)."""
    if not dist.distributed:
        return t
    t = t.to(dist.device, copy=True)  # NCCL reduces only CUDA tensors
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t / dist.world_size


def agree_any(flags: torch.Tensor, dist: DistInfo) -> list[bool]:
    """For each bool in `flags` (a tensor of any shape, flattened), whether it is true on any rank;
    the same list on every rank, for one host sync."""
    flags = flags.flatten().to(torch.int32)
    if dist.distributed:
        flags = flags.to(dist.device, copy=True)  # NCCL reduces only CUDA tensors
        tdist.all_reduce(flags, op=tdist.ReduceOp.MAX)
    return [bool(x) for x in flags.tolist()]


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        tdist.barrier()
