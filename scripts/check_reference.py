"""Check this project against vectors recorded from the reference implementations.

    python -m scripts.check_reference ../shared/reference/*.pt

A model file (`kind`, `config`, `checkpoint`, `batch`, `render`, ...) is rendered by the model its
config names, loaded through our checkpoint loader; Efficient-LVSM files are also rendered
incrementally through the scene cache. A pose-normalization file (`c2w_in`, `c2w_out`,
`scene_scale_factor`) is normalized. An LPIPS file (`format` lpips_vgg_reference_v1, in
`lpips/`) is scored by our LPIPS-VGG (utils/lpips_vgg.py), from weight files written out of it.
Prints the max abs error per file and exits 1 if any is above the tolerance: 1e-4 in fp32 (the
reference README's bound for a faithful reimplementation), 1e-2 with `--dtype bf16` (bf16 autocast,
e.g. `--device cuda --dtype bf16` on a GPU); LPIPS files are always scored in fp32 (no TF32), to 1e-6.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from configs.schema import config_from_dict
from model import SceneCache, build_model, load_weights, read_checkpoint
from scripts.check_training import check_training_file
from utils.geometry import compute_rays, normalize_scene_poses
from utils.lpips_vgg import REFERENCE_FORMAT as LPIPS_FORMAT
from utils.lpips_vgg import LpipsVGG, write_weight_files
from utils.precision import autocast

TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2}
LPIPS_TOLERANCE = 1e-6  # the reference README's bound for a faithful fp32 LPIPS-VGG


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _expect(path: Path, name: str, value, shape: tuple) -> torch.Tensor:
    """value must be a tensor of this shape (None: any size) -> value; else ValueError naming path and key."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: '{name}' must be a tensor of shape {_shape_text(shape)}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, value.shape)):
        raise ValueError(f"{path}: '{name}' has shape {list(value.shape)}, expected {_shape_text(shape)}")
    return value


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def validate_model_file(path: Path, data: dict) -> None:
    """Keys and shapes of a recorded model file; a ValueError names the file and the key at fault."""
    for key in ("config", "checkpoint", "batch", "num_input_views", "num_target_views", "render"):
        if key not in data:
            raise ValueError(f"{path}: model file lacks key '{key}'")
    batch = data["batch"]
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: 'batch' must be a dict, got {type(batch).__name__}")
    for key in ("image", "c2w", "fxfycxcy"):
        if key not in batch:
            raise ValueError(f"{path}: 'batch' lacks key '{key}' (has {sorted(batch)})")
    images = _expect(path, "batch.image", batch["image"], (None, None, 3, None, None))
    b, v, _, h, w = images.shape
    _expect(path, "batch.c2w", batch["c2w"], (b, v, 4, 4))
    _expect(path, "batch.fxfycxcy", batch["fxfycxcy"], (b, v, 4))
    v_in, v_t = data["num_input_views"], data["num_target_views"]
    for name, n in (("num_input_views", v_in), ("num_target_views", v_t)):
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= v:
            raise ValueError(f"{path}: '{name}' must be an int in [1, {v}] (the batch's views), got {n!r}")
    _expect(path, "render", data["render"], (b, v_t, 3, h, w))
    incremental = data.get("incremental_render")
    if isinstance(incremental, torch.Tensor):  # the recorded files stack them: [v_in, b, v_t, 3, h, w]
        _expect(path, "incremental_render", incremental, (v_in, b, v_t, 3, h, w))
    elif incremental is not None:
        if not isinstance(incremental, (list, tuple)) or len(incremental) != v_in:
            raise ValueError(f"{path}: 'incremental_render' must hold {v_in} renders (one per input view)")
        for k, render in enumerate(incremental):
            _expect(path, f"incremental_render[{k}]", render, (b, v_t, 3, h, w))
    if "ray_o" in data:
        for key in ("ray_o", "ray_d"):
            if not isinstance(data.get(key), dict) or not {"input", "target"} <= set(data[key]):
                raise ValueError(f"{path}: '{key}' must be a dict with 'input' and 'target'")
            _expect(path, f"{key}.input", data[key]["input"], (b, v_in, 3, h, w))
            _expect(path, f"{key}.target", data[key]["target"], (b, v_t, 3, h, w))


def validate_pose_file(path: Path, data: dict) -> None:
    for key in ("c2w_in", "c2w_out", "scene_scale_factor"):
        if key not in data:
            raise ValueError(f"{path}: pose-normalization file lacks key '{key}'")
    c2w_in, c2w_out = data["c2w_in"], data["c2w_out"]
    if not isinstance(c2w_in, (list, tuple)) or not isinstance(c2w_out, (list, tuple)) or len(c2w_in) != len(c2w_out):
        raise ValueError(f"{path}: 'c2w_in' and 'c2w_out' must be lists of the same length")
    for i, (a, b) in enumerate(zip(c2w_in, c2w_out)):
        _expect(path, f"c2w_in[{i}]", a, (None, 4, 4))
        _expect(path, f"c2w_out[{i}]", b, (a.shape[0], 4, 4))


def check_model_file(path: Path, data: dict, device: str = "cpu", dtype: str = "fp32") -> dict[str, float]:
    """Errors of one recorded model file: rays, full render, incremental renders."""
    validate_model_file(path, data)
    cfg = config_from_dict(data["config"], where=f"{path} config")
    model = build_model(cfg.model).eval()
    load_weights(model, data["checkpoint"], name=f"{path} checkpoint")
    model.to(device)
    batch, v_in, v_t = data["batch"], data["num_input_views"], data["num_target_views"]
    images, c2w, fxfycxcy = (batch[k].float().to(device) for k in ("image", "c2w", "fxfycxcy"))
    h, w = images.shape[-2:]
    inputs = (images[:, :v_in], c2w[:, :v_in], fxfycxcy[:, :v_in])
    targets = (c2w[:, -v_t:], fxfycxcy[:, -v_t:])
    errors = {}
    if "ray_o" in data:
        for part, sl in (("input", slice(0, v_in)), ("target", slice(c2w.shape[1] - v_t, None))):
            ray_o, ray_d = compute_rays(c2w[:, sl], fxfycxcy[:, sl], h, w)
            errors[f"rays/{part}"] = max(_max_err(ray_o.cpu(), data["ray_o"][part]),
                                         _max_err(ray_d.cpu(), data["ray_d"][part]))
    # on_cpu: this check runs bf16 on the CPU too, on purpose (bf16 numerics on any machine).
    with torch.no_grad(), autocast(device, "bf16", enabled=dtype == "bf16", on_cpu=True):
        errors["render"] = _max_err(model(*inputs, *targets).cpu(), data["render"])
        if data.get("incremental_render") is not None:
            cache: SceneCache | None = None
            worst = 0.0
            for k in range(v_in):
                cache = model.encode(*(x[:, k:k + 1] for x in inputs), cache=cache)
                worst = max(worst, _max_err(model.render(cache, *targets).cpu(), data["incremental_render"][k]))
            errors["incremental_render"] = worst
    return errors


def check_pose_file(path: Path, data: dict) -> dict[str, float]:
    validate_pose_file(path, data)
    worst = 0.0
    for c2w_in, c2w_out in zip(data["c2w_in"], data["c2w_out"], strict=True):
        worst = max(worst, _max_err(normalize_scene_poses(c2w_in.float(), data["scene_scale_factor"]), c2w_out))
    return {"pose_normalization": worst}


def validate_lpips_file(path: Path, data: dict) -> None:
    """Keys and shapes of an LPIPS file (the weights are checked when they are written out)."""
    for key in ("vgg16_features", "lin", "images_a", "images_b", "lpips",
                "images_a_nonsquare", "images_b_nonsquare", "lpips_nonsquare"):
        if key not in data:
            raise ValueError(f"{path}: LPIPS file lacks key '{key}'")
    for suffix in ("", "_nonsquare"):
        a = _expect(path, f"images_a{suffix}", data[f"images_a{suffix}"], (None, 3, None, None))
        _expect(path, f"images_b{suffix}", data[f"images_b{suffix}"], tuple(a.shape))
        _expect(path, f"lpips{suffix}", data[f"lpips{suffix}"], (a.shape[0],))


def check_lpips_file(path: Path, data: dict, device: str = "cpu") -> dict[str, float]:
    """Errors of our LPIPS-VGG, built from weight files written out of the LPIPS file, on its pairs."""
    validate_lpips_file(path, data)
    with tempfile.TemporaryDirectory() as tmp:
        vgg16, heads = Path(tmp) / "vgg16.pth", Path(tmp) / "vgg.pth"
        write_weight_files(data, vgg16, heads)
        net = LpipsVGG.from_files(vgg16, heads).to(device)
    errors = {}
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # fp32 convs on GPUs too
        for suffix in ("", "_nonsquare"):
            a, b = (data[f"images_{k}{suffix}"].float().to(device) for k in ("a", "b"))
            errors[f"lpips{suffix}"] = _max_err(net(a, b).cpu(), data[f"lpips{suffix}"])
            with autocast(device, "bf16", on_cpu=True):  # what the reference's bf16 evaluation scores
                shift = _max_err(net(a, b).float().cpu(), data[f"lpips{suffix}"])
            print(f"{path}: LPIPS under bf16 autocast (inference.lpips_autocast, as the reference's evaluation) "
                  f"differs from fp32 by up to {shift:.2e} on the{' non-square' if suffix else ''} pairs",
                  file=sys.stderr)  # information: the verdict lines on stdout hold the fp32 check
    return errors


def check_file(path: Path, device: str = "cpu", dtype: str = "fp32") -> tuple[dict[str, float], dict[str, float]]:
    """(error per part, the tolerance each is held to) of one recorded file."""
    data = read_checkpoint(path)
    if data.get("format") == LPIPS_FORMAT:
        return _each(check_lpips_file(path, data, device), LPIPS_TOLERANCE)
    if str(data.get("kind", "")).endswith("_training"):  # fp32 on the CPU, as recorded
        return check_training_file(path, data)
    if "kind" in data:
        return _each(check_model_file(path, data, device, dtype), TOLERANCE[dtype])
    if "c2w_in" in data:
        return _each(check_pose_file(path, data), TOLERANCE[dtype])
    raise ValueError(f"{path}: neither a model file (no 'kind'), a pose-normalization file (no 'c2w_in') nor an "
                     f"LPIPS file (format {LPIPS_FORMAT}); keys: {sorted(data)}")


def _each(errors: dict[str, float], tolerance: float) -> tuple[dict[str, float], dict[str, float]]:
    return errors, {k: tolerance for k in errors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--device", default="cpu", help="torch device for the model files (cpu, cuda, ...)")
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="fp32", help="fp32, or bf16 autocast")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    failed = False
    for path in args.files:
        try:
            errors, tolerance = check_file(path, args.device, args.dtype)
        except (ValueError, FileNotFoundError) as err:  # unreadable, malformed, or weights of other shapes
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            print(f"FAIL {message}")
            failed = True
            continue
        over = [k for k, v in errors.items() if not v <= tolerance[k]]  # NaN fails too
        failed |= bool(over)
        if len(set(tolerance.values())) == 1:
            detail = f"max abs error {max(errors.values()):.2e} (" + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        else:  # training files: each measure against its own tolerance
            detail = "errors (" + ", ".join(f"{k} {v:.2e} <= {tolerance[k]:g}" for k, v in errors.items())
        print(f"{'FAIL' if over else 'ok  '} {path}: {detail})" + (f"; over: {', '.join(over)}" if over else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
