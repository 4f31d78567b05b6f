"""The papers' evaluation protocol: pixelSplat index, per-image metrics, counts, outputs; one or many ranks.

Scenes are sharded across ranks as indices rank, rank + world, ... (no padding, no dropping), each
scored once; rank 0 gathers the rows and writes every output. A scene that fails to load is
reported by name with its reason and the others go on.
"""

import csv
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as tdist
from omegaconf import OmegaConf
from tqdm import tqdm

from data.dataset_scene import SceneDataset
from data.dataset_object import EVAL_MIN_ENTRIES, ObjectDataset
from data.factory import build_dataset, dataset_kind
from data.scene_format import SAMPLE_ERRORS
from evaluation.scenes import RESIZE_TO, baseline_summary, render_scenes, resize_record, score_scene
from model import build_model, load_weights
from model.checkpoint import checkpoints, reference_checkpoints
from model.render import render_cameras
from utils.config import ConfigError
from utils.distributed import DistInfo
from utils.gallery import save_scene_images, scene_folder_name, write_gallery_page
from utils.metrics import LpipsScorer, ssim
from utils.precision import allow_tf32, autocast
from utils.video import TRAJECTORIES, reference_video_cameras, trajectory_cameras, write_video

METRICS = ("psnr", "ssim", "lpips")


def find_checkpoint(cfg) -> Path:
    """inference.checkpoint_dir (a file, or a folder: its newest checkpoint), else training.checkpoint_dir's newest.
    A folder's newest: ours (ckpt_<step>.pt), else the reference trainer's newest step checkpoint (as its
    load_ckpt picks it), else the last *.pt by name."""
    where = cfg.inference.checkpoint_dir or cfg.training.checkpoint_dir
    key = "inference.checkpoint_dir" if cfg.inference.checkpoint_dir else "training.checkpoint_dir"
    path = Path(where)
    if path.is_file():
        return path
    found = checkpoints(path) or reference_checkpoints(path) or (sorted(path.glob("*.pt")) if path.is_dir() else [])
    if not found:
        raise FileNotFoundError(f"{key}={where}: no checkpoint file there")
    return found[-1]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_eval_dataset(cfg) -> SceneDataset | ObjectDataset:
    """Scenes at the pixelSplat index inference.view_idx_file_path; objects (training.dataset_name) as the
    reference's object loader evaluates them, no index (data.dataset_object: the first
    inference.eval_objects objects of the list, inputs 0-3 for objects of 14 frames)."""
    if dataset_kind(cfg.training) == "object":
        return build_dataset(cfg, evaluation=True)
    index = cfg.inference.view_idx_file_path
    if not index:
        raise ConfigError("inference.view_idx_file_path: the evaluation index is required (pixelSplat's JSON)")
    return build_dataset(cfg, eval_index=index)


def _autocast(cfg, device: torch.device):
    return autocast(device, cfg.training.amp_dtype, cfg.training.use_amp)


def evaluate_scenes(cfg, model, dataset, indices: list[int], device: torch.device, autocast,
                    out_dir: Optional[Path] = None, lpips: Optional[LpipsScorer] = None,
                    failures: Optional[list] = None, progress: Optional[str] = None) -> list[dict]:
    """The one evaluation pipeline (inference.py, the quick start, held-out PSNR in training): render
    the scenes `indices` of `dataset`, score every target (PSNR and the two baselines; SSIM and LPIPS
    when `lpips` is given), and, with `out_dir`, write their images (and videos) there. A scene that
    fails to load is appended to `failures` as (scene, reason) and the others go on. With `progress`
    (the bar's label), a tqdm bar counts scenes (done, rate, time left). Returns per-image rows."""
    rows, failures = [], failures if failures is not None else []
    if progress is not None:
        indices = tqdm(indices, desc=progress, unit="scene", dynamic_ncols=True, mininterval=1.0)
    records = render_scenes(model, dataset, indices, cfg.training.num_input_views, device, autocast,
                            on_error=failures.append, errors=SAMPLE_ERRORS,
                            incremental=cfg.inference.use_incremental_inference)
    for record in records:
        video = None
        if out_dir is not None and cfg.inference.render_video:
            video = scene_video(cfg, model, record, out_dir, device)
        if cfg.inference.resize:  # after the video: the model renders it from the inputs at their own size
            record = resize_record(record)
        scene_rows = score_scene(record)
        extra = {} if lpips is None else {"ssim": ssim(record["render"], record["targets"]),
                                          "lpips": lpips(record["render"], record["targets"])}
        paths = save_scene_images(out_dir, record) if out_dir is not None else None
        for row in scene_rows:
            i = row["target"]
            row.update({k: float(v[i]) for k, v in extra.items()})
            if paths is not None:
                row.update(inputs=paths["inputs"], gt=paths["targets"][i], render=paths["renders"][i],
                           error=paths["errors"][i])
            if video is not None:
                row["video"] = video
        rows += scene_rows
    return rows


def check_video_config(cfg) -> None:
    """The render_video keys, checked before any scene is rendered: what the reference cannot do
    (it renders traj_type "interpolate" only) or we cannot honour is an error naming the key."""
    rv, key = cfg.inference.render_video_config, "inference.render_video_config"
    if not cfg.inference.render_video:
        return
    if rv.traj_type not in TRAJECTORIES:
        raise ConfigError(f"{key}.traj_type={rv.traj_type!r}: known {', '.join(TRAJECTORIES)} "
                          f"(the reference renders 'interpolate' only)")
    if rv.num_frames < 1:
        raise ConfigError(f"{key}.num_frames={rv.num_frames}: must be >= 1")
    if rv.traj_type == "spiral" and (rv.order_poses or not rv.loop_video):
        raise ConfigError(f"{key}.{'order_poses' if rv.order_poses else 'loop_video'}: the spiral (ours, "
                          f"num_frames in all) always loops and has no poses to order")
    if rv.traj_type == "interpolate" and cfg.training.num_input_views + rv.loop_video < 2:
        raise ConfigError(f"{key}.loop_video=false with training.num_input_views=1: no transition to interpolate")


def scene_video(cfg, model, record: dict, out_dir: Path, device: torch.device) -> str:
    """Render the scene along the configured path through its input cameras; returns the video's
    path relative to out_dir (mp4, or gif where no encoder is installed). "interpolate" is the
    reference's render_video (num_frames per transition, loop_video, order_poses); "spiral" is ours."""
    rv, v_in = cfg.inference.render_video_config, record["inputs"].shape[0]
    c2w, k = record["c2w"][:v_in], record["fxfycxcy"][:v_in]
    if rv.traj_type == "interpolate":
        cams = reference_video_cameras(c2w, k, rv.num_frames, rv.loop_video, rv.order_poses)
    else:
        cams = trajectory_cameras(c2w, k, rv.num_frames, rv.traj_type, loop=True)
    frames = render_cameras(model, record["inputs"].to(device), c2w.to(device), k.to(device),
                            *(x.to(device) for x in cams), autocast=lambda: _autocast(cfg, device))
    # 30 fps: the reference's _save_video (utils/metric_utils.py)
    path = write_video(frames, out_dir / "videos" / f"{scene_folder_name(record['scene'])}.mp4", fps=30)
    return path.relative_to(out_dir).as_posix()


def gather(items: list, dist: DistInfo) -> list:
    """Every rank's list, concatenated, on every rank."""
    if not dist.distributed:
        return items
    parts = [None] * dist.world_size
    tdist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def lpips_scorer(cfg, device: torch.device) -> LpipsScorer:
    """LPIPS for an evaluation: ours from inference.lpips_vgg16_path / lpips_heads_path (paths as given,
    relative ones from the working directory) when the VGG-16 file is set, else the lpips package; under
    the evaluation's autocast (bf16 on GPU with training.use_amp) unless inference.lpips_autocast=false."""
    amp = (lambda: _autocast(cfg, device)) if cfg.inference.lpips_autocast else None
    return LpipsScorer(device, vgg16_path=cfg.inference.lpips_vgg16_path, heads_path=cfg.inference.lpips_heads_path,
                       autocast=amp)


def run_evaluation(cfg, dist: DistInfo) -> Optional[dict]:
    """Evaluate; rank 0 writes outputs and returns the summary (None on other ranks). Everything is
    written into a staging folder inside inference_out_dir (`.partial/`) and moved into place at the
    end, replacing only what an earlier evaluation wrote there (its manifest, `replace_outputs`): an
    earlier run's images never sit beside new rows, an interrupted run leaves the old results whole,
    and files inference did not write (a pose check, a user's notes) stay."""
    out_dir = Path(cfg.inference_out_dir or cfg.inference.inference_out_dir or "")
    if not str(out_dir) or str(out_dir) == ".":
        raise ConfigError("inference_out_dir: say where to write the evaluation (inference_out_dir=DIR)")
    check_output_dir(out_dir)
    check_video_config(cfg)
    ckpt_path = find_checkpoint(cfg)
    allow_tf32(dist.device, cfg.training.use_tf32)  # as the reference's inference.py: its YAML's use_tf32
    model = build_model(cfg.model).to(dist.device)
    ckpt = load_weights(model, ckpt_path)
    dataset = build_eval_dataset(cfg)
    stage = staging_dir(out_dir)
    if dist.is_main:
        make_staging_dir(out_dir, stage)
    if dist.distributed:
        tdist.barrier()  # the staging folder exists (and is empty) before any rank writes into it
    lpips = lpips_scorer(cfg, dist.device)
    failures = list(getattr(dataset, "index_problems", [])) if dist.is_main else []  # reported once
    share = list(range(dist.rank, len(dataset), dist.world_size))  # this rank's scenes
    label = "evaluating" if not dist.distributed else f"evaluating (rank 0's share, 1/{dist.world_size})"
    try:
        rows = evaluate_scenes(cfg, model, dataset, share, dist.device, lambda: _autocast(cfg, dist.device), stage,
                               lpips, failures, progress=label if dist.is_main else None)
    except KeyboardInterrupt:
        if dist.is_main:
            print(f"\ninterrupted: the scenes done so far are in {stage} (not scored together); the results "
                  f"already in {out_dir} are untouched")
        raise
    rows, failures = gather(rows, dist), gather(failures, dist)
    if not dist.is_main:
        return None
    rows.sort(key=lambda r: (r["scene"], r["target"]))
    header = protocol_header(cfg, ckpt_path, ckpt, dataset, failures, lpips)
    summary = write_outputs(stage, header, rows, gallery=cfg.inference.generate_website)
    (stage / "config.yaml").write_text(OmegaConf.to_yaml(cfg))  # the resolved config, overrides applied
    kept = replace_outputs(stage, out_dir)
    if kept:
        print(f"{out_dir}: kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} that no evaluation wrote: "
              f"{', '.join(kept[:8])}{' ...' if len(kept) > 8 else ''}")
    return summary


OUTPUT_MARKER = "summary.json"  # a folder holding it is an earlier evaluation's output
MANIFEST = ".evaluation_outputs.json"  # the entries of out_dir an evaluation wrote (replaced by the next one)
STAGE = ".partial"  # the staging folder, inside out_dir
# What an evaluation writes at the top of out_dir: how an output folder written before the manifest
# existed is read (with any folder holding input_0.png, where scene images once were).
KNOWN_OUTPUTS = ("summary.json", "per_image.csv", "per_image.json", "per_scene.csv", "per_scene.json", "index.html",
                 "images", "config.yaml", "videos")


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work, naming the path, if out_dir cannot become this run's output folder."""
    key = f"inference_out_dir={out_dir}"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{key}: is a file, not a folder; choose a folder path")
    if out_dir.is_dir() and any(p.name != STAGE for p in out_dir.iterdir()) and not (out_dir / OUTPUT_MARKER).is_file():
        raise ConfigError(f"{key}: the folder holds files that are not an evaluation's output (no "
                          f"{OUTPUT_MARKER}); empty it or choose another folder")
    parent = out_dir.absolute().parent
    if not out_dir.exists() and parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: its folder {parent} is not writable")
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the folder is not writable")


def staging_dir(out_dir: Path) -> Path:
    """The folder a run writes into before its outputs move into out_dir (the same on every rank).
    Inside out_dir, so the moves are renames on one file system, whatever out_dir is (a mount point,
    a symbolic link)."""
    return out_dir / STAGE


def make_staging_dir(out_dir: Path, stage: Path) -> None:
    """An empty staging folder (a crashed run's leftovers removed); OSError becomes a ConfigError naming it."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir()
    except OSError as err:
        raise ConfigError(f"inference_out_dir={out_dir}: cannot create the staging folder {stage}: "
                          f"{err.strerror or err}") from None


def earlier_outputs(out_dir: Path) -> list[str]:
    """The entries of out_dir an earlier evaluation wrote: its manifest's, or (a folder written before
    manifests) the known files and the scene folders (those holding input_0.png)."""
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            names = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            names = None
        if isinstance(names, list) and all(isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
                                           for n in names):
            return names
    return [p.name for p in out_dir.iterdir()
            if p.name in KNOWN_OUTPUTS or (p.is_dir() and (p / "input_0.png").is_file())]


def replace_outputs(stage: Path, out_dir: Path) -> list[str]:
    """Move the finished staging folder's entries into out_dir: what an earlier evaluation wrote there
    is removed first, anything else stays. Writes the manifest; returns the names kept (not ours)."""
    for name in earlier_outputs(out_dir):
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    written = sorted(p.name for p in stage.iterdir())
    for name in written:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():  # a folder of ours the manifest missed
            shutil.rmtree(target)
        os.replace(stage / name, target)
    (out_dir / MANIFEST).write_text(json.dumps(written))
    stage.rmdir()
    return sorted(p.name for p in out_dir.iterdir() if p.name not in written and p.name != MANIFEST)


def protocol_header(cfg, ckpt_path: Path, ckpt: dict, dataset: SceneDataset | ObjectDataset, failures: list,
                    lpips) -> dict:
    t = cfg.training
    objects = isinstance(dataset, ObjectDataset)
    index = None if objects else Path(cfg.inference.view_idx_file_path)
    counts = {k: v for k, v in dataset.counts.items() if not k.endswith("_names")}
    problems = {k for k, _ in getattr(dataset, "index_problems", [])}
    counts["failed_to_load"] = sum(k not in problems for k, _ in failures)
    return {
        "checkpoint": str(ckpt_path), "checkpoint_step": ckpt.get("step"), "model": cfg.model.class_name,
        "resolution": cfg.model.image_tokenizer.image_size, "square_crop": t.square_crop,
        "input_views": t.num_input_views, "target_views": t.num_target_views, "target_has_input": False,
        "incremental": cfg.inference.use_incremental_inference,
        "index_file": str(index) if index else None, "index_sha256": file_hash(index) if index else None,
        "scene_list": (t.list_path or t.dataset_path) if objects else t.dataset_path,
        **({"objects": f"the first {cfg.inference.eval_objects or 'all'} of the list with more than "
                       f"{EVAL_MIN_ENTRIES} entries (the reference's object evaluation); views drawn from "
                       f"seed {t.seed}", "excluded": [{"scene": k, "reason": r} for k, r in dataset.excluded]}
           if objects else {}),
        "scored_size": (f"{RESIZE_TO[0]}x{RESIZE_TO[1]} (inference.resize: bilinear, align_corners=False)"
                        if cfg.inference.resize else "as rendered"),
        "metrics": "PSNR per image on [0, 1]-clamped images, averaged; SSIM (scikit-image, gaussian, win 11, "
                   "data_range 1); LPIPS (lpips, VGG, normalize=True)",
        "lpips_status": "available" if lpips.available else f"unavailable: {lpips.reason}",
        "lpips_backend": lpips.backend,  # "ours (VGG-16 <file>, heads <file>)", "lpips package", or None
        "counts": counts, "missing_on_disk": dataset.counts.get("missing_on_disk_names", []),
        "failed": [{"scene": s, "reason": r} for s, r in failures],
    }


def write_outputs(out_dir: Path, header: dict, rows: list[dict], gallery: bool = True) -> dict:
    columns = ["scene", "scene_name", "target", "frame", *METRICS, "psnr_nearest_view", "psnr_mean_image"]
    with open(out_dir / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    scenes = {}
    for row in rows:
        scenes.setdefault(row["scene"], []).append(row)
    per_scene = [{"scene": s, "scene_name": r[0].get("scene_name", s), "images": len(r),
                  **{m: sum(x[m] for x in r) / len(r) for m in METRICS}} for s, r in scenes.items()]
    with open(out_dir / "per_scene.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scene", "scene_name", "images", *METRICS])
        writer.writeheader()
        writer.writerows(per_scene)
    per_image = [{k: _finite(r.get(k)) for k in columns} for r in rows]
    (out_dir / "per_image.json").write_text(json.dumps(per_image, indent=1))
    (out_dir / "per_scene.json").write_text(json.dumps([{k: _finite(v) for k, v in s.items()} for s in per_scene],
                                                       indent=1))
    means = {m: _finite(sum(r[m] for r in rows) / len(rows)) if rows else None for m in METRICS}
    summary = {**header, "images": len(rows), "scenes": len(per_scene), **means, **baseline_summary(rows)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if gallery:
        title = f"{header['model']} on {Path(header['scene_list']).parent.name}"
        write_gallery_page(out_dir, [{k: _finite(v) for k, v in r.items()} for r in rows], title=title, header=summary)
    return summary


def _finite(value):
    """NaN (a metric that could not be computed, e.g. LPIPS without its package) as null in JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value
