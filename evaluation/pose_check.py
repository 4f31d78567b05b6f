"""Pose sensitivity diagnostic: does a renderer follow the target camera?

Two checks on one scene's input views (poses normalized together, as the dataset does):

1. Render at each input camera. The render should reproduce that input; the PSNR of render vs
   input is reported beside the mean-input-image baseline (what a camera-blind renderer can reach).
2. Sweep one input camera: rotate it about its own y axis, and shift it along its own x axis, a
   few steps each side. Per step: the PSNR to the unperturbed render and the mean absolute change
   from the previous frame. A renderer that ignores the target camera changes by ~nothing
   ("static"); one that jumps has one step much larger than the rest (max > k x median: "jumpy").

    report, pictures = run_pose_check(model, images, c2w, fxfycxcy)   # one scene, no batch axis
    write_outputs(out_dir, report, pictures); print("\n".join(summary_lines(report)))

The model is called as given (put it in eval mode first): Efficient-LVSM encodes the inputs once and
renders every camera from its cache; other models run their full forward per chunk of cameras.
"""

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from utils.images import to_uint8
from utils.metrics import psnr

# A sweep whose frames all stay within one 8-bit grey level (mean |frame - unperturbed render|)
# of the unperturbed render is camera-blind: any real camera motion of a few degrees moves far more.
STATIC_TOL = 1.0 / 255.0
# Consecutive steps of an even sweep should change the render by similar amounts; one step more
# than this many times the median step is a jump.
SMOOTH_FACTOR = 3.0
# Trained models reach 25-30 dB on held-out views of RealEstate10K; at the input cameras themselves
# a render below this does not reproduce the input.
MIN_INPUT_PSNR = 20.0
ERROR_GAIN = 4.0  # difference images are shown x 4 so small changes stay visible
SWEEPS = ("rotate_y", "shift_x")


def _device(model) -> torch.device:
    """The device of a module's first parameter; the CPU for parameter-free fakes."""
    params = model.parameters() if isinstance(model, torch.nn.Module) else iter(())
    first = next(params, None)
    return first.device if first is not None else torch.device("cpu")


def make_renderer(model, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
                  chunk: int = 8) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function rendering target cameras from one scene's inputs.

    images [v_in, 3, h, w], c2w [v_in, 4, 4], fxfycxcy [v_in, 4] (no batch axis). The function takes
    c2w [v_t, 4, 4], fxfycxcy [v_t, 4] and returns renders [v_t, 3, h, w] (float32, CPU).
    """
    device = _device(model)
    inputs = tuple(x[None].to(device) for x in (images, c2w, fxfycxcy))  # [1, v_in, ...]
    incremental = callable(getattr(model, "encode", None)) and callable(getattr(model, "render", None))
    with torch.no_grad():
        cache = model.encode(*inputs) if incremental else None

    @torch.no_grad()
    def render(target_c2w: torch.Tensor, target_fxfycxcy: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, target_c2w.shape[0], chunk):
            targets = (target_c2w[None, s:s + chunk].to(device), target_fxfycxcy[None, s:s + chunk].to(device))
            frames = model.render(cache, *targets) if incremental else model(*inputs, *targets)
            out.append(frames[0].float().cpu())  # [chunk, 3, h, w]
        return torch.cat(out)

    return render


def local_motion(angle_rad: float, shift: float) -> torch.Tensor:
    """A camera-frame motion [4, 4] (float64): rotate by `angle_rad` about the camera's own y axis
    (down), then move `shift` along its own x axis (right). Apply as c2w @ local_motion(...)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    motion = torch.eye(4, dtype=torch.float64)
    motion[:3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
    motion[0, 3] = shift
    return motion


def sweep_offsets(steps: int, max_value: float) -> list[float]:
    """2 * steps + 1 evenly spaced offsets from -max_value to max_value; the middle one is 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (frames each side of the camera), got {steps}")
    return [max_value * k / steps for k in range(-steps, steps + 1)]


def sweep_cameras(c2w: torch.Tensor, kind: str, offsets: list[float]) -> torch.Tensor:
    """c2w [4, 4] moved by each offset (radians for rotate_y, scene units for shift_x) -> [n, 4, 4]."""
    if kind not in SWEEPS:
        raise ValueError(f"sweep kind must be one of {SWEEPS}, got {kind!r}")
    motions = [local_motion(o, 0.0) if kind == "rotate_y" else local_motion(0.0, o) for o in offsets]
    return (c2w.double() @ torch.stack(motions)).to(c2w.dtype)  # [n, 4, 4]


def sweep_stats(frames: torch.Tensor, static_tol: float = STATIC_TOL, smooth_factor: float = SMOOTH_FACTOR) -> dict:
    """Numbers and verdict of one sweep: frames [n, 3, h, w], the unperturbed render in the middle.

    verdict: "static" (the renders do not depend on the camera), "jumpy" (max step change above
    smooth_factor x the median step change) or "smooth".
    """
    n = frames.shape[0]
    if n < 3 or n % 2 == 0:
        raise ValueError(f"a sweep needs an odd number >= 3 of frames (unperturbed in the middle), got {n}")
    centre = frames[n // 2]
    step_change = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))  # [n - 1]
    from_centre = (frames - centre).abs().mean(dim=(1, 2, 3))  # [n]
    largest, median = float(step_change.max()), float(np.median(step_change.numpy()))
    ratio = largest / median if median > 0 else (math.inf if largest > 0 else 0.0)
    if float(from_centre.max()) < static_tol:
        verdict = "static"
    elif ratio > smooth_factor:
        verdict = "jumpy"
    else:
        verdict = "smooth"
    return {
        "psnr_to_unperturbed": psnr(frames, centre.expand_as(frames)).tolist(),
        "change_from_previous": step_change.tolist(),
        "change_from_unperturbed": from_centre.tolist(),
        "max_change_from_unperturbed": float(from_centre.max()),
        "max_step_change": largest, "median_step_change": median,
        "max_over_median": ratio if math.isfinite(ratio) else None,  # JSON has no infinity
        "largest_step": int(step_change.argmax()),
        "verdict": verdict,
    }


def _sweep_message(name: str, stats: dict, static_tol: float, smooth_factor: float) -> str:
    if stats["verdict"] == "static":
        return (f"{name}: renders do not depend on the target camera (or barely: largest mean change from the "
                f"unperturbed render {stats['max_change_from_unperturbed']:.2e} < {static_tol:.2e})")
    if stats["verdict"] == "jumpy":
        ratio = stats["max_over_median"]
        times = f"{ratio:.1f}x" if ratio is not None else "infinitely many times"
        return (f"{name}: not smooth: step {stats['largest_step']} -> {stats['largest_step'] + 1} changes the "
                f"render by {stats['max_step_change']:.4f}, {times} the median step "
                f"{stats['median_step_change']:.4f} (limit {smooth_factor:g}x)")
    return (f"{name}: smooth: step changes {min(stats['change_from_previous']):.4f} to "
            f"{stats['max_step_change']:.4f} (max/median {stats['max_over_median']:.2f}, limit {smooth_factor:g})")


def input_check(render: Callable, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
                min_psnr: float = MIN_INPUT_PSNR) -> tuple[dict, torch.Tensor]:
    """Render at each input camera and score against that input. Returns (numbers, renders [v_in, 3, h, w])."""
    renders = render(c2w, fxfycxcy)  # [v_in, 3, h, w]
    scores = psnr(renders, images.float())  # [v_in]
    mean_image = images.float().mean(0, keepdim=True).expand_as(images)
    baseline = psnr(mean_image, images.float()) if images.shape[0] > 1 else None  # one view: it is its own mean
    ok = float(scores.mean()) >= min_psnr
    return {
        "psnr": scores.tolist(), "mean_psnr": float(scores.mean()),
        "mean_image_baseline_psnr": baseline.tolist() if baseline is not None else None,
        "verdict": "reproduces" if ok else "does_not_reproduce",
    }, renders


def _input_message(stats: dict, min_psnr: float) -> str:
    base = stats["mean_image_baseline_psnr"]
    context = f"; mean-input-image baseline {sum(base) / len(base):.2f} dB" if base else ""
    if stats["verdict"] == "reproduces":
        return (f"input cameras: renders reproduce the inputs (mean PSNR {stats['mean_psnr']:.2f} dB "
                f">= {min_psnr:g}{context})")
    return (f"input cameras: renders do NOT reproduce the inputs at their own cameras (mean PSNR "
            f"{stats['mean_psnr']:.2f} dB < {min_psnr:g}{context})")


def run_pose_check(model, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor, *, sweep_view: int = 0,
                   steps: int = 4, max_angle_deg: float = 10.0, max_shift: float = 0.1,
                   static_tol: float = STATIC_TOL, smooth_factor: float = SMOOTH_FACTOR,
                   min_input_psnr: float = MIN_INPUT_PSNR, chunk: int = 8) -> tuple[dict, dict]:
    """Both checks on one scene: images [v_in, 3, h, w], c2w [v_in, 4, 4], fxfycxcy [v_in, 4].

    max_shift is in the units of c2w (normalized scenes span about +-0.74). Returns (report: numbers
    and verdicts, JSON-ready; pictures: {"inputs", "input_renders", "sweeps": {kind: frames}}).
    """
    v_in = images.shape[0]
    if not 0 <= sweep_view < v_in:
        raise ValueError(f"sweep_view={sweep_view} is not one of the {v_in} input views")
    render = make_renderer(model, images, c2w, fxfycxcy, chunk)
    inputs, input_renders = input_check(render, images, c2w, fxfycxcy, min_input_psnr)
    report = {"num_input_views": v_in, "image_size": list(images.shape[-2:]), "sweep_view": sweep_view,
              "settings": {"steps": steps, "max_angle_deg": max_angle_deg, "max_shift": max_shift,
                           "static_tol": static_tol, "smooth_factor": smooth_factor, "min_input_psnr": min_input_psnr},
              "input_cameras": inputs, "sweeps": {}}
    checks = [(_input_message(inputs, min_input_psnr), inputs["verdict"] == "reproduces")]  # (message, passed)
    pictures = {"inputs": images.float().cpu(), "input_renders": input_renders, "sweeps": {}}
    sweeps = (("rotate_y", math.radians(max_angle_deg), "deg"), ("shift_x", max_shift, "scene units"))
    for kind, max_value, unit in sweeps:
        offsets = sweep_offsets(steps, max_value)
        cams = sweep_cameras(c2w[sweep_view], kind, offsets)  # [2 * steps + 1, 4, 4]
        frames = render(cams, fxfycxcy[sweep_view].expand(len(offsets), 4))  # [2 * steps + 1, 3, h, w]
        stats = sweep_stats(frames, static_tol, smooth_factor)
        shown = [math.degrees(o) for o in offsets] if kind == "rotate_y" else offsets
        report["sweeps"][kind] = {"offsets": shown, "unit": unit, **stats}
        checks.append((_sweep_message(kind, stats, static_tol, smooth_factor), stats["verdict"] == "smooth"))
        pictures["sweeps"][kind] = frames
    report["verdicts"] = [message for message, _ in checks]
    report["problems"] = [message for message, passed in checks if not passed]
    report["ok"] = not report["problems"]
    return report, pictures


def summary_lines(report: dict) -> list[str]:
    """The printed summary: per-check numbers, then the verdicts."""
    ic = report["input_cameras"]
    lines = [f"pose sensitivity: {report['num_input_views']} input views, {report['image_size'][0]}x"
             f"{report['image_size'][1]}, sweeps from input view {report['sweep_view']}",
             "  PSNR at input cameras (dB): " + " ".join(f"{p:.2f}" for p in ic["psnr"])]
    for kind, s in report["sweeps"].items():
        lines.append(f"  {kind} ({s['unit']}): " + " ".join(f"{o:+.3g}" for o in s["offsets"]))
        lines.append("    PSNR to unperturbed: " + " ".join(f"{p:.1f}" for p in s["psnr_to_unperturbed"]))
        lines.append("    change from previous: " + " ".join(f"{c:.4f}" for c in s["change_from_previous"]))
    lines += ["verdicts:"] + [f"  - {m}" for m in report["verdicts"]]
    lines.append("OK: renders follow the target camera" if report["ok"] else f"PROBLEMS: {len(report['problems'])}")
    return lines


def save_grid(rows: list[torch.Tensor], path: str | Path, pad: int = 2) -> Path:
    """Rows of images ([n, 3, h, w] in [0, 1] each, same h and w) -> one PNG on a white background."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[-2:]
    canvas = torch.ones(3, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, top:top + h, left:left + w] = image.float().clamp(0, 1)
    path = Path(path)
    Image.fromarray(to_uint8(canvas)).save(path)
    return path


def write_outputs(out_dir: str | Path, report: dict, pictures: dict) -> dict[str, Path]:
    """pose_check.json, inputs_vs_renders.png (inputs / renders / |error| x4) and, per sweep,
    sweep_<kind>.png (frames / |change from the previous frame| x4). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "pose_check.json"}
    paths["json"].write_text(json.dumps(report, indent=1))
    inputs, renders = pictures["inputs"], pictures["input_renders"]
    paths["inputs_vs_renders"] = save_grid(
        [inputs, renders, ((renders - inputs).abs() * ERROR_GAIN).clamp(0, 1)], out / "inputs_vs_renders.png")
    for kind, frames in pictures["sweeps"].items():
        change = torch.cat([torch.zeros_like(frames[:1]), (frames[1:] - frames[:-1]).abs() * ERROR_GAIN])
        paths[f"sweep_{kind}"] = save_grid([frames, change.clamp(0, 1)], out / f"sweep_{kind}.png")
    return paths
