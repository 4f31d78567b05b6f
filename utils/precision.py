"""Mixed precision: the one autocast context of training, evaluation, videos, own photos and the demo.

bf16 or fp16 autocast on CUDA; on the CPU (and when disabled) a no-op, so the CPU runs fp32 through
the same code path (GUIDE: "bf16 on GPU by default; fp32 on CPU").
"""

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, dtype: str = "bf16", enabled: bool = True):
    """A context: autocast to `dtype` ("bf16" or "fp16") on a CUDA device when enabled, else nothing."""
    if dtype not in AMP_DTYPES:
        raise ValueError(f"training.amp_dtype: {dtype!r} is not one of {list(AMP_DTYPES)}")
    if not enabled or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[dtype])
