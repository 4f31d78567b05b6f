"""Mixed precision: the one autocast context of training, evaluation, videos, own photos and the demo.

bf16 or fp16 autocast on CUDA; on the CPU (and when disabled) a no-op, so the CPU runs fp32 through
the same code path (GUIDE: "bf16 on GPU by default; fp32 on CPU").
"""

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The reference also accepts these; its autocast to float32 does nothing (CUDA autocast disables itself
# for a dtype it does not support), so both mean full precision here (TF32 is training.use_tf32's).
FULL_PRECISION = ("fp32", "tf32")


def check_amp_dtype(dtype: str) -> None:
    if dtype not in AMP_DTYPES and dtype not in FULL_PRECISION:
        raise ValueError(f"autocast dtype {dtype!r} (training.amp_dtype) is not one of "
                         f"{list(AMP_DTYPES) + list(FULL_PRECISION)}")


def allow_tf32(device: torch.device | str, enabled: bool) -> bool:
    """TF32 matmuls and convolutions on a CUDA device when `enabled` (training.use_tf32: the reference
    sets it for training and evaluation alike); nothing elsewhere. Returns whether it was set."""
    if not enabled or torch.device(device).type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return True


def autocast(device: torch.device | str, dtype: str = "bf16", enabled: bool = True, on_cpu: bool = False):
    """A context: autocast to `dtype` ("bf16" or "fp16") on a CUDA device when enabled, else nothing
    (also for "fp32" and "tf32", which the reference accepts). on_cpu=True autocasts on the CPU as well:
    for checks of low-precision numerics on any machine (scripts/check_reference.py --dtype bf16), never
    for speed."""
    check_amp_dtype(dtype)
    kind = torch.device(device).type
    if not enabled or dtype in FULL_PRECISION or (kind != "cuda" and not (on_cpu and kind == "cpu")):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=AMP_DTYPES[dtype])
