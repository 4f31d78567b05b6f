"""The one autocast helper (utils/precision.py) and the one float-to-uint8 conversion (utils/images.py)."""

import numpy as np
import pytest
import torch

from utils.images import to_uint8
from utils.precision import allow_tf32, autocast


def _matmul_dtype() -> torch.dtype:
    a = torch.ones(2, 2)
    return (a @ a).dtype


def test_autocast_is_a_no_op_on_cpu_unless_asked():
    for dtype in ("bf16", "fp16"):
        with autocast("cpu", dtype):
            assert _matmul_dtype() == torch.float32  # GUIDE: fp32 on CPU
    with autocast(torch.device("cpu"), "bf16", enabled=True, on_cpu=True):
        assert _matmul_dtype() == torch.bfloat16  # the reference check's bf16 numerics on the CPU
    with autocast("cpu", "bf16", enabled=False, on_cpu=True):
        assert _matmul_dtype() == torch.float32
    for dtype in ("fp32", "tf32"):  # the reference accepts them: full precision, even where asked
        with autocast("cpu", dtype, enabled=True, on_cpu=True):
            assert _matmul_dtype() == torch.float32
    with pytest.raises(ValueError, match="'fp8'"):
        autocast("cpu", "fp8")


def test_to_uint8_rounds_half_up_and_moves_channels_last():
    # floor(x * 255 + 0.5), clamped: 0.2 -> 51, 0.5 -> 128 (127.5 up), 1/255 * 0.49 -> 0, 0.999 -> 255.
    values = torch.tensor([0.2, 0.5, 0.49 / 255, 0.999, -1.0, 2.0])
    image = values.view(1, 1, 6).expand(3, 1, 6).clone()  # [3, h=1, w=6]
    image[1] = 0.0
    out = to_uint8(image)
    assert out.shape == (1, 6, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [51, 128, 0, 255, 0, 255]
    assert out[0, :, 1].tolist() == [0] * 6


def test_tf32_is_set_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert not allow_tf32("cpu", True) and not allow_tf32("cuda", False)
    assert not torch.backends.cuda.matmul.allow_tf32
    assert allow_tf32("cuda:0", True) and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
