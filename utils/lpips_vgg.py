"""LPIPS-VGG (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018) in a few layers of our own, without torchvision, from two local weight files.

It computes what the lpips package (0.1.4) computes with ``LPIPS(net="vgg", version="0.1")(a, b,
normalize=True)``: images in [0, 1] mapped to [-1, 1], the package's scaling layer, torchvision's
``vgg16().features`` (3x3 convolutions with padding 1, ReLUs, 2x2 max pooling) tapped after relu1_2,
relu2_2, relu3_3, relu4_3 and relu5_3, each tap unit-normalized over channels (eps 1e-10), the squared
difference weighted by a 1x1 convolution without bias (the "linear head"), averaged over space and
summed over the five taps.

The two files:

- VGG-16: torchvision's ImageNet weights as a state dict (``vgg16-397923af.pth``; keys
  ``features.{i}.weight/bias``, ``classifier.*`` ignored), or the state dict of ``vgg16().features``
  alone (keys ``{i}.weight/bias``). Half-precision tensors are upcast to fp32.
- Linear heads: the lpips package's ``lpips/weights/v0.1/vgg.pth`` (keys ``lin{k}.model.1.weight``,
  [1, c_k, 1, 1]; ``lins.{k}.model.1.weight``, the names of the package's own state dict, are read too).
  Without a path, the copy inside an installed lpips package is used; the package is located, never
  imported (importing it imports torchvision).
"""

import importlib.util
import os
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.images import check_vgg_pair

PathLike = Union[str, os.PathLike]

# VGG-16 is configuration D of Simonyan & Zisserman (ICLR 2015, Table 1): blocks of 3x3 convolutions
# with these widths and depths, each conv followed by a ReLU, each block by a 2x2 max pool (LPIPS taps
# the last ReLU of each block, so the fifth pool is never run).
_BLOCK_WIDTHS = (64, 128, 256, 512, 512)
_BLOCK_DEPTHS = (2, 2, 3, 3, 3)


def _vgg16_convs() -> Tuple[Tuple[Tuple[int, int, int], ...], ...]:
    """Per block, its convs as (index in torchvision's vgg16().features, c_in, c_out)."""
    blocks, index, c_in = [], 0, 3
    for width, depth in zip(_BLOCK_WIDTHS, _BLOCK_DEPTHS):
        convs = []
        for _ in range(depth):
            convs.append((index, c_in, width))
            index, c_in = index + 2, width  # conv, relu
        blocks.append(tuple(convs))
        index += 1  # the block's max pool
    return tuple(blocks)


VGG16_BLOCKS = _vgg16_convs()  # conv indices 0, 2 | 5, 7 | 10, 12, 14 | 17, 19, 21 | 24, 26, 28
TAP_CHANNELS = _BLOCK_WIDTHS  # channels of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
MIN_SIZE = 16  # relu5_3 comes after four 2x2 poolings

# lpips' ScalingLayer (lpips/lpips.py, used by version 0.1): (x - shift) / scale
# per RGB channel, on inputs in [-1, 1]: the ImageNet mean and std moved to that range.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor

VGG16_HELP = ("The VGG-16 file is torchvision's ImageNet VGG-16 state dict, "
              "https://download.pytorch.org/models/vgg16-397923af.pth (keys features.0.weight ... "
              "features.28.bias; the state dict of vgg16().features, keys 0.weight ... 28.bias, is read too).")
HEADS_HELP = ("The LPIPS heads file is the lpips package's lpips/weights/v0.1/vgg.pth: it ships inside the "
              "package (`pip install lpips`, then it is found without a path) and in "
              "github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/vgg.pth).")
REFERENCE_FORMAT = "lpips_vgg_reference_v1"


# ----------------------------------------------------------------------------- weight files

def _load_state(path: PathLike, what: str, help_text: str) -> dict:
    """torch.load(weights_only=True) a state dict; errors name the file and say where to get it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}. {help_text}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"cannot read {what} file {path} with torch.load (truncated, corrupt, or not a "
                         f"plain state dict?): {str(err).splitlines()[0] if str(err) else type(err).__name__}. "
                         f"{help_text}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{what} file {path} holds a {type(state).__name__}, expected a state dict. {help_text}")
    return state


def _tensor(state: dict, key: str, shape: Tuple[int, ...], source: str, help_text: str) -> torch.Tensor:
    """state[key] as fp32, checked to be a floating tensor of `shape`; errors name the source and key."""
    if key not in state:
        raise ValueError(f"key {key} missing from {source}. {help_text}")
    value = state[key]
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        kind = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
        raise ValueError(f"{key} in {source} is {kind}, expected a floating-point tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"{key} in {source} has shape {list(value.shape)}, expected {list(shape)}. {help_text}")
    return value.detach().to(torch.float32).contiguous()


def vgg16_weights(state: dict, source: str) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
    """The 13 convs of a VGG-16 state dict (torchvision's full model, or its `features` alone) as
    {features index: (weight [c_out, c_in, 3, 3], bias [c_out])} in fp32; `source` names it in errors."""
    prefix = "features." if any(str(k).startswith("features.") for k in state) else ""
    out = {}
    for block in VGG16_BLOCKS:
        for index, c_in, c_out in block:
            out[index] = (_tensor(state, f"{prefix}{index}.weight", (c_out, c_in, 3, 3), source, VGG16_HELP),
                          _tensor(state, f"{prefix}{index}.bias", (c_out,), source, VGG16_HELP))
    return out


def head_weights(state: dict, source: str) -> List[torch.Tensor]:
    """The five linear heads [1, c_k, 1, 1] (fp32) from the lpips package's file (`lin{k}.model.1.weight`)
    or its module's state dict (`lins.{k}.model.1.weight`); `source` names it in errors."""
    prefix = "lins.{}" if "lins.0.model.1.weight" in state and "lin0.model.1.weight" not in state else "lin{}"
    return [_tensor(state, f"{prefix.format(k)}.model.1.weight", (1, c, 1, 1), source, HEADS_HELP)
            for k, c in enumerate(TAP_CHANNELS)]


def package_heads_path() -> Optional[Path]:
    """weights/v0.1/vgg.pth inside an installed lpips package, or None. Located with find_spec, which
    does not run the package (its __init__ imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / "v0.1" / "vgg.pth"
        if path.is_file():
            return path
    return None


def write_weight_files(reference: Union[PathLike, dict], vgg16_path: PathLike, heads_path: PathLike) -> None:
    """From a `lpips_vgg_reference_v1` file (or its loaded dict), write the VGG-16 file in torchvision's
    layout (`features.{i}.weight/bias`, the stored fp16 tensors) and the heads file in the lpips
    package's layout (`lin{k}.model.1.weight`)."""
    source = "the LPIPS reference dict"
    if not isinstance(reference, dict):
        source = str(reference)
        reference = _load_state(reference, "LPIPS reference", "It is ../shared/reference/lpips/lpips_vgg.pt.")
    if reference.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"{source}: 'format' is {reference.get('format')!r}, expected {REFERENCE_FORMAT!r}")
    for key in ("vgg16_features", "lin"):
        if not isinstance(reference.get(key), dict):
            raise ValueError(f"{source}: '{key}' must be a state dict, got {type(reference.get(key)).__name__}")
    vgg16_weights(reference["vgg16_features"], f"{source} 'vgg16_features'")  # checked before writing
    heads = head_weights(reference["lin"], f"{source} 'lin'")
    features = {f"features.{k}": v for k, v in reference["vgg16_features"].items()}  # as stored (fp16)
    heads = {f"lin{k}.model.1.weight": weight for k, weight in enumerate(heads)}
    torch.save(features, vgg16_path)
    torch.save(heads, heads_path)


# ----------------------------------------------------------------------------- network

class LpipsVGG(nn.Module):
    """LPIPS-VGG v0.1 as a frozen module: forward(pred, target) -> per-image distance.

    Build it with `from_files`; a bare LpipsVGG() has uninitialised weights.
    """

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1) for _, c_in, c_out in block)
            for block in VGG16_BLOCKS)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_files(cls, vgg16_path: PathLike, heads_path: Optional[PathLike] = None) -> "LpipsVGG":
        """Weights from the two files (see the module doc); heads_path None: the installed lpips package's."""
        if heads_path is None:
            heads_path = package_heads_path()
            if heads_path is None:
                raise FileNotFoundError(f"no LPIPS heads file given and no installed lpips package to take it "
                                        f"from. {HEADS_HELP}")
        net = cls()
        net.load(vgg16_weights(_load_state(vgg16_path, "VGG-16", VGG16_HELP), str(vgg16_path)),
                 head_weights(_load_state(heads_path, "LPIPS heads", HEADS_HELP), str(heads_path)))
        net.vgg16_path, net.heads_path = Path(vgg16_path), Path(heads_path)
        return net

    def load(self, convs: Dict[int, Tuple[torch.Tensor, torch.Tensor]], heads: List[torch.Tensor]) -> None:
        """Copy in weights as `vgg16_weights` and `head_weights` return them."""
        with torch.no_grad():
            for block, layers in zip(VGG16_BLOCKS, self.blocks):
                for (index, _, _), conv in zip(block, layers):
                    conv.weight.copy_(convs[index][0])
                    conv.bias.copy_(convs[index][1])
            for head, weight in zip(self.heads, heads):
                head.weight.copy_(weight)

    def train(self, mode: bool = True) -> "LpipsVGG":
        return super().train(False)  # a fixed metric: never in training mode

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x [n, 3, h, w] after the scaling layer -> the five taps [n, c_k, h / 2^k, w / 2^k]."""
        taps = []
        for k, layers in enumerate(self.blocks):
            if k > 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            for conv in layers:
                x = F.relu(conv(x))
            taps.append(x)
        return taps

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target [n, 3, h, w] in [0, 1], h, w >= 16 -> LPIPS [n] (float32)."""
        check_vgg_pair(pred, target, MIN_SIZE, "relu5_3", prefix="LPIPS: ")
        n = pred.shape[0]
        x = torch.cat([pred, target]).float() * 2 - 1  # normalize=True: [0, 1] -> [-1, 1]; [2n, 3, h, w]
        total = torch.zeros(n, device=x.device)
        for tap, head in zip(self.features((x - self.shift) / self.scale), self.heads):
            tap = tap / (tap.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)  # unit length over channels
            diff = (tap[:n] - tap[n:]).pow(2)  # [n, c_k, h_k, w_k]
            total = total + head(diff).mean(dim=(1, 2, 3))  # 1x1 head to [n, 1, h_k, w_k], spatial mean
        return total
