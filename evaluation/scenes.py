"""Render held-out scenes and score every target image, beside the two trivial baselines.

Rendering, scoring and writing are separate steps: `render_scenes` yields one record per scene,
`score_scene` turns it into per-image rows, `baseline_summary` averages the baselines (per image, as
the reference averages).
"""

from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from model.render import render_scene
from utils.metrics import mean_image_baseline, nearest_view_baseline, psnr


@torch.no_grad()
def render_scenes(model: torch.nn.Module, dataset, indices: list[int], num_input_views: int,
                  device: torch.device, autocast: Callable, on_error: Optional[Callable] = None,
                  errors: tuple = (), incremental: bool = False) -> Iterator[dict]:
    """For each dataset index: its scene key (dataset.scene_key), scene name, frame indices and the input, target and rendered
    views ([v, 3, h, w] on the CPU, float32). The first num_input_views views of a sample are inputs.
    A sample that raises one of `errors` is passed to on_error((scene, reason)) and skipped. With
    `incremental`, the inputs enter the model's cache one view at a time."""
    was_training = model.training
    model.eval()
    try:
        for idx in indices:
            key = dataset.scene_key(idx)  # a scene's metadata file stem (as the index is keyed), an object's uid
            try:
                sample = dataset[idx]
            except errors as err:
                on_error((key, str(err)))
                continue
            views = {k: sample[k][None].to(device) for k in ("image", "c2w", "fxfycxcy")}  # [1, v, ...]
            v_in = num_input_views
            render = render_scene(model, views["image"][:, :v_in], views["c2w"][:, :v_in], views["fxfycxcy"][:, :v_in],
                                  views["c2w"][:, v_in:], views["fxfycxcy"][:, v_in:], autocast=autocast,
                                  one_view_at_a_time=incremental)  # [1, v_t, 3, h, w]
            yield {"scene": key, "scene_name": sample["scene_name"], "frames": sample["index"][:, 0].tolist(),
                   "inputs": sample["image"][:v_in], "targets": sample["image"][v_in:],
                   "render": render[0].float().cpu(), "c2w": sample["c2w"], "fxfycxcy": sample["fxfycxcy"]}
    finally:
        model.train(was_training)


# inference.resize: Efficient-LVSM utils/metric_utils.py resize_image, applied in export_results to the
# inputs, targets and renders before they are saved and scored (PSNR, SSIM, LPIPS); not to videos.
# A fixed 256 x 256 whatever the rendered size, bilinear, align_corners=False, no antialiasing.
RESIZE_TO = (256, 256)


def resize_record(record: dict) -> dict:
    """The record with its inputs, targets and render [v, 3, h, w] resized to RESIZE_TO as the
    reference's inference.resize does; cameras and frame indices unchanged."""
    return {**record, **{k: F.interpolate(record[k], size=RESIZE_TO, mode="bilinear", align_corners=False)
                         for k in ("inputs", "targets", "render")}}


def score_scene(record: dict) -> list[dict]:
    """Per-target rows: PSNR of the render and of both baselines (nearest input camera, mean image)."""
    inputs, targets, c2w = record["inputs"], record["targets"], record["c2w"]
    v_in = inputs.shape[0]
    nearest = nearest_view_baseline(inputs[None], c2w[None, :v_in], c2w[None, v_in:])[0]
    mean = mean_image_baseline(inputs[None], targets.shape[0])[0]
    scores = {"psnr": psnr(record["render"], targets), "psnr_nearest_view": psnr(nearest, targets),
              "psnr_mean_image": psnr(mean, targets)}
    return [{"scene": record["scene"], "scene_name": record.get("scene_name", record["scene"]), "target": i, "frame": record["frames"][v_in + i],
             **{k: float(v[i]) for k, v in scores.items()}} for i in range(targets.shape[0])]


def baseline_summary(rows: list[dict]) -> dict:
    """Mean PSNR over images of the two baselines, the better one, and the render's margin over it."""
    if not rows:
        return {}
    out = {k: sum(r[k] for r in rows) / len(rows) for k in ("psnr_nearest_view", "psnr_mean_image")}
    out["best_baseline"] = max(out.values())
    out["margin_db"] = sum(r["psnr"] for r in rows) / len(rows) - out["best_baseline"]
    return out
