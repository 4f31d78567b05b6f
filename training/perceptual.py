"""VGG-19 perceptual loss of the LVSM reference, with a hand-written VGG-19 and local weight files.

The loss (``PerceptualLoss``) follows the reference's ``model/loss.py`` (LVSM, Jin et al., ICLR 2025,
and Efficient-LVSM), which took it from Li et al., "Crowdsampling the Plenoptic Function" (ECCV 2020,
``models/networks.py``), itself a port of the loss of Chen & Koltun, "Photographic Image Synthesis
with Cascaded Refinement Networks" (ICCV 2017) and its TensorFlow code: L1 distances between
post-ReLU VGG-19 features of conv1_2 ... conv5_2, average pooling in place of max pooling.

Weights come from a local file, in either of two layouts (told apart by the file's first bytes):

- MatConvNet ``imagenet-vgg-verydeep-19.mat`` (the file the reference downloads): a SimpleNN net,
  ``layers`` a cell array of structs with ``name`` and, for convolutions, ``weights = {kernel, bias}``,
  the kernel ``[kh, kw, c_in, c_out]`` with kh along image rows and c_in in RGB order (MatConvNet's
  ``import-caffe.py`` transposes Caffe's ``[kw, kh, ...]`` blobs to rows-first and flips BGR to RGB).
  ``scipy.io.loadmat`` keeps MATLAB's indexing, so torch's ``[c_out, c_in, kh, kw]`` is
  ``kernel.permute(3, 2, 0, 1)``, with no spatial transpose; both correlate (no kernel flip).
- torchvision's VGG-19 state dict (``vgg19-dcbb9e9d.pth``): ``features.{i}.weight/bias`` already in
  torch layout; ``classifier.*`` is ignored.

The VGG here is a frozen helper of the trainer, not part of the model: its weights never go into our
model checkpoints. (Reference checkpoints carry them as ``loss_computer.*``; the checkpoint loader
drops those keys.)
"""

import contextlib
import os
import pickle
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import scipy.io
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.io.matlab import MatReadError

from utils.images import check_vgg_pair

PathLike = Union[str, os.PathLike]
ConvWeights = Dict[str, Tuple[torch.Tensor, torch.Tensor]]  # name -> (weight [c_out, c_in, 3, 3], bias [c_out])

# VGG-19 is configuration E of Simonyan & Zisserman (ICLR 2015, Table 1): blocks of 3x3 convolutions
# (padding 1) with these widths and depths, each conv followed by a ReLU, each block by a 2x2 pool.
_BLOCK_WIDTHS = (64, 128, 256, 512, 512)
_BLOCK_DEPTHS = (2, 2, 4, 4, 4)


def _vgg19_layers() -> Tuple[Tuple[str, ...], Dict[str, Tuple[int, int]]]:
    """Layer names in network order, and (c_in, c_out) of each conv."""
    names, convs, c_in = [], {}, 3
    for block, (width, depth) in enumerate(zip(_BLOCK_WIDTHS, _BLOCK_DEPTHS), start=1):
        for i in range(1, depth + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            convs[f"conv{block}_{i}"] = (c_in, width)
            c_in = width
        names.append(f"pool{block}")
    return tuple(names), convs


# 37 names; a name's position is also its index in MatConvNet's `layers` and torchvision's `features`.
VGG19_LAYERS, VGG19_CONVS = _vgg19_layers()
TORCHVISION_INDEX = {name: VGG19_LAYERS.index(name) for name in VGG19_CONVS}  # conv1_2 -> 2, ...

WEIGHTS_HELP = (
    "Get the perceptual loss weight file in one of two forms: MatConvNet's imagenet-vgg-verydeep-19.mat "
    "from the MatConvNet pretrained models page (https://www.vlfeat.org/matconvnet/pretrained/, file "
    "https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat; the reference uses it), or "
    "torchvision's VGG-19 weights saved as a state dict (https://download.pytorch.org/models/vgg19-dcbb9e9d.pth)."
)


# ----------------------------------------------------------------------------- weight files

def detect_weight_format(path: PathLike) -> str:
    """'matconvnet' or 'torchvision', from the file's first bytes; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual loss weight file not found: {path}. {WEIGHTS_HELP}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"MATLAB"):  # the text header of MAT-files version 5 and 7.3
        return "matconvnet"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch.save: zip, or legacy pickle
        return "torchvision"
    raise ValueError(f"perceptual loss weight file {path} is neither a MATLAB .mat file (MatConvNet) nor a "
                     f"torch.save file (torchvision state dict); it starts with {head!r}. {WEIGHTS_HELP}")


def _check_shape(array_shape: Sequence[int], expected: Tuple[int, ...], what: str, path: Path) -> None:
    if tuple(array_shape) != expected:
        raise ValueError(f"{what} in {path} has shape {list(array_shape)}, expected {list(expected)} "
                         f"(is this VGG-19?)")


def _read_matconvnet(path: Path, names: Sequence[str]) -> ConvWeights:
    try:
        data = scipy.io.loadmat(str(path), variable_names=["layers"], squeeze_me=True, struct_as_record=False)
    except NotImplementedError as e:  # scipy cannot read v7.3 (HDF5) MAT-files
        raise ValueError(f"cannot read {path}: MATLAB v7.3 files are not supported; re-save it with "
                         f"save(..., '-v7') or use the file from the MatConvNet page") from e
    except (MatReadError, ValueError, TypeError, OSError, EOFError) as e:
        raise ValueError(f"cannot read perceptual loss weight file {path} as a MAT-file "
                         f"(truncated or corrupt?): {e}") from e
    if "layers" not in data:
        raise ValueError(f"{path} has no 'layers' variable; expected a MatConvNet SimpleNN network "
                         f"such as imagenet-vgg-verydeep-19.mat")
    layers = {getattr(layer, "name", None): layer for layer in np.atleast_1d(data["layers"])}
    out = {}
    for name in names:
        if name not in layers:
            raise ValueError(f"layer {name} not found in {path} (layers: {[n for n in layers if n]})")
        weights = getattr(layers[name], "weights", None)
        if weights is None or len(weights) != 2:
            raise ValueError(f"layer {name} in {path} has no {{kernel, bias}} weights")
        c_in, c_out = VGG19_CONVS[name]
        kernel, bias = np.asarray(weights[0]), np.asarray(weights[1])
        _check_shape(kernel.shape, (3, 3, c_in, c_out), f"kernel of layer {name} [kh, kw, c_in, c_out]", path)
        _check_shape((bias.size,), (c_out,), f"bias of layer {name}", path)
        out[name] = (torch.from_numpy(kernel.astype(np.float32)).permute(3, 2, 0, 1).contiguous(),  # [o, i, kh, kw]
                     torch.from_numpy(bias.astype(np.float32).reshape(c_out)))
    return out


def _read_torchvision(path: Path, names: Sequence[str]) -> ConvWeights:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read perceptual loss weight file {path} with torch.load "
                         f"(truncated or corrupt, or not a plain state dict?): {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a torchvision VGG-19 state dict")
    out = {}
    for name in names:
        c_in, c_out = VGG19_CONVS[name]
        pair = []
        for kind, shape in (("weight", (c_out, c_in, 3, 3)), ("bias", (c_out,))):
            key = f"features.{TORCHVISION_INDEX[name]}.{kind}"
            if key not in state:
                raise ValueError(f"key {key} ({name}) missing from {path}; expected a torchvision VGG-19 "
                                 f"state dict (features.0.weight ... features.34.bias)")
            if not isinstance(state[key], torch.Tensor):
                raise ValueError(f"{key} ({name}) in {path} is a {type(state[key]).__name__}, not a tensor")
            _check_shape(state[key].shape, shape, f"{key} ({name})", path)
            pair.append(state[key].detach().to(torch.float32).contiguous())
        out[name] = (pair[0], pair[1])
    return out


def write_matconvnet(path: PathLike, convs: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    """A SimpleNN .mat file laid out like imagenet-vgg-verydeep-19.mat (`layers`, a 1 x L cell of
    structs, and the mean image) holding `convs`: {name: (kernel [kh, kw, c_in, c_out], bias [c_out])}
    in MatConvNet's layout. For seeded weights (the reference check's VGG recipe) and tests."""
    entries = []
    for name in VGG19_LAYERS:
        if name.startswith("conv"):
            if name not in convs:
                continue
            weights = np.empty((1, 2), dtype=object)
            weights[0, 0], weights[0, 1] = convs[name][0], convs[name][1].reshape(-1, 1)
            entries.append({"name": name, "type": "conv", "weights": weights, "size": np.array(
                [weights[0, 0].shape], dtype=float), "pad": np.ones((1, 4)), "stride": np.ones((1, 2))})
        elif name.startswith("relu"):
            entries.append({"name": name, "type": "relu", "leak": 0.0})
        else:
            entries.append({"name": name, "type": "pool", "method": "max", "pool": np.array([[2.0, 2.0]])})
    layers = np.empty((1, len(entries)), dtype=object)
    for i, entry in enumerate(entries):
        layers[0, i] = entry
    meta = {"normalization": {"averageImage": np.array([[[123.68, 116.779, 103.939]]])}}
    scipy.io.savemat(str(path), {"layers": layers, "meta": meta})


def read_vgg19_weights(path: PathLike, names: Sequence[str]) -> Tuple[ConvWeights, str]:
    """Weights of the convs ``names`` in torch layout, and the file's format ('matconvnet' / 'torchvision')."""
    path = Path(path)
    fmt = detect_weight_format(path)
    read = _read_matconvnet if fmt == "matconvnet" else _read_torchvision
    return read(path, names), fmt


# ----------------------------------------------------------------------------- network

class VGG19Features(nn.Module):
    """VGG-19 convolutional trunk, built and run only up to the deepest requested layer.

    ``outputs`` are layer names from ``VGG19_LAYERS`` (e.g. ``"relu3_2"``); ``forward`` returns their
    activations in that order. ``pool`` is ``"avg"`` (the reference loss) or ``"max"`` (the original net).
    """

    def __init__(self, outputs: Sequence[str], pool: str = "avg"):
        super().__init__()
        unknown = [name for name in outputs if name not in VGG19_LAYERS]
        if unknown or not outputs:
            raise ValueError(f"VGG-19 outputs must be names from {VGG19_LAYERS}, got {list(outputs)}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.outputs, self.pool = tuple(outputs), pool
        self.layers = VGG19_LAYERS[: max(VGG19_LAYERS.index(name) for name in outputs) + 1]
        self.convs = nn.ModuleDict({name: nn.Conv2d(*VGG19_CONVS[name], kernel_size=3, padding=1)
                                    for name in self.layers if name.startswith("conv")})

    def load_file(self, path: PathLike) -> str:
        """Copy weights from a MatConvNet or torchvision file (see the module doc); returns the format."""
        weights, fmt = read_vgg19_weights(path, list(self.convs))
        with torch.no_grad():
            for name, conv in self.convs.items():
                conv.weight.copy_(weights[name][0])
                conv.bias.copy_(weights[name][1])
        return fmt

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x [n, 3, h, w] in the weights' input convention -> activations [n, c_l, h / 2^k, w / 2^k]."""
        found = {}
        for name in self.layers:
            if name.startswith("conv"):
                x = self.convs[name](x)
            elif name.startswith("relu"):
                x = F.relu(x)
            else:
                x = F.avg_pool2d(x, 2) if self.pool == "avg" else F.max_pool2d(x, 2)
            if name in self.outputs:
                found[name] = x
        return [found[name] for name in self.outputs]


# ----------------------------------------------------------------------------- loss

# Layers and weights of the CRN loss (Chen & Koltun 2017 code: conv1_2 / 2.6, conv2_2 / 4.8,
# conv3_2 / 3.7, conv4_2 / 5.6, conv5_2 * 10 / 1.5; its "convX_2" tensors are taken after the ReLU),
# kept unchanged by Crowdsampling and by the LVSM reference.
LOSS_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
LOSS_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
_MIN_SIZE = 16  # relu5_2 follows four 2x2 poolings

# VGG input = image [0, 1] * scale - shift, per channel (RGB).
# MatConvNet VGG-VD: pixels in [0, 255] minus the mean RGB colour (123.68, 116.779, 103.939), the
# --average-value of MatConvNet's import-ref-models.sh and the constant of the reference loss.
# torchvision: (x - mean) / std with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
_MEAN_255 = (123.68, 116.779, 103.939)
_TV_MEAN, _TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_INPUT_SCALE_SHIFT = {
    "matconvnet": ((255.0,) * 3, _MEAN_255),
    "torchvision": (tuple(1 / s for s in _TV_STD), tuple(m / s for m, s in zip(_TV_MEAN, _TV_STD))),
}


class PerceptualLoss(nn.Module):
    """The reference's VGG-19 perceptual loss between images in [0, 1]; a frozen VGG, gradients to ``pred``.

    loss = mean|pred - target| + (1/255) * sum_l w_l * mean|phi_l(pred) - phi_l(target)|

    with phi_l the post-ReLU features of conv1_2 ... conv5_2 (average pooling) and w_l = LOSS_WEIGHTS.
    This equals the reference's ``(e0 + e1 + ... + e5) / 255``: its pixel term e0 is the L1 distance of
    the [0, 255] mean-subtracted images, i.e. 255 * mean|pred - target|. Each mean is over all elements of
    the batch. The constants were tuned for the MatConvNet weights; with torchvision weights the VGG gets
    torchvision's input normalization and the feature terms have a different scale than the reference's.
    """

    def __init__(self, vgg: VGG19Features, fmt: str):
        """`vgg`: a VGG19Features with LOSS_LAYERS as outputs and average pooling, its weights in the
        convention `fmt` ("matconvnet" or "torchvision"); see `from_file`."""
        super().__init__()
        if vgg.outputs != LOSS_LAYERS or vgg.pool != "avg":
            raise ValueError(f"the perceptual loss needs VGG19Features({LOSS_LAYERS}, pool='avg')")
        self.vgg = vgg.requires_grad_(False).eval()
        self.weight_format = fmt
        scale, shift = _INPUT_SCALE_SHIFT[fmt]
        self.register_buffer("input_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, weights_path: PathLike) -> "PerceptualLoss":
        """The loss with VGG-19 weights from a MatConvNet or torchvision file (see the module doc)."""
        vgg = VGG19Features(LOSS_LAYERS, pool="avg")
        return cls(vgg, vgg.load_file(weights_path))

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # always eval: the VGG is a fixed feature extractor

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target [n, 3, h, w] in [0, 1] -> scalar (float32). ``target`` gets no gradient.

        Under autocast the VGG runs in the autocast dtype (bf16 keeps fp32's range, so the
        [0, 255]-scale activations stay finite); under fp16 autocast, whose range they can exceed, it
        runs in fp32. Distances and means are always taken in fp32.
        """
        check_vgg_pair(pred, target, _MIN_SIZE, "relu5_2")
        pred, target = pred.float(), target.detach().float()
        device_type = pred.device.type
        fp16 = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16
        with torch.autocast(device_type, enabled=False) if fp16 else contextlib.nullcontext():
            feats_pred = self.vgg(pred * self.input_scale - self.input_shift)  # [n, c_l, h_l, w_l] each
            with torch.no_grad():
                feats_target = self.vgg(target * self.input_scale - self.input_shift)
        loss = (pred - target).abs().mean()
        for w, fp, ft in zip(LOSS_WEIGHTS, feats_pred, feats_target):
            loss = loss + (w / 255.0) * (fp.float() - ft.float()).abs().mean()
        return loss

