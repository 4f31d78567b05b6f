"""The config schema: the root `Config` that the YAML presets beside this file fill.

    cfg = load_config("configs/efficient_lvsm_256.yaml", ["training.lr=1e-4"])

Sections: `model` (model/config.py, beside the models), `training` (data and optimization, as the
reference's YAML files mix them), `inference`, `demo`. The schema is a superset of the reference
implementations' keys (their published YAML files load unchanged); keys accepted only so that those
files load are listed in REFERENCE_ONLY and warned about at start when set, and reference keys this
code rejects are in REJECTED with the reason. Overrides are `key=value` (or the reference scripts'
`key = value`); an unknown key is an error naming it and the closest valid key; the result is
read-only (OmegaConf struct mode): derived numbers are computed where they are used.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from model.config import ModelConfig
from utils.config import ConfigError, build_config, read_yaml, schema_paths


@dataclass
class ViewSelectorConfig:
    min_frame_dist: int = 25  # reference defaults: both authors' scene loaders
    max_frame_dist: int = 100  # (`get("max_frame_dist", 100)`); every published YAML sets 192


@dataclass
class ObjectDataConfig:
    """Object renders (training.dataset_name: object): not in the reference configs. Defaults are
    the authors' object loader (Efficient-LVSM data/dataset_object.py at 8980294^)."""
    background: Optional[list[float]] = None  # RGB in [0, 1] to composite on; None: alpha dropped (reference)
    camera_convention: str = "opengl"  # "opengl" (Blender) or "opencv"
    view_sampler: str = "groups"  # "groups": one of each 8 frames of 32, then random (reference); "random"
    normalize_poses: bool = True  # mean camera, training.scene_scale_factor (reference); False: as written
    fov_deg: float = 49.1  # vertical FoV of render folders, which carry no intrinsics (reference)
    scale: float = 1.0  # global scale of camera positions, applied last


@dataclass
class TrainingConfig:
    # data
    dataset_name: str = "data.dataset_scene.Dataset"
    dataset_path: str = "data/train/full_list.txt"
    list_path: Optional[str] = None  # objects: a JSON {uid: render folder}, used instead of dataset_path (reference)
    dataset_len: Optional[int] = None
    num_views: int = 8
    num_input_views: int = 2
    num_target_views: int = 6
    target_has_input: bool = True
    square_crop: bool = True
    center_crop: bool = True
    scene_scale_factor: float = 1.35
    use_rel_pose: bool = False
    view_selector: ViewSelectorConfig = field(default_factory=ViewSelectorConfig)
    objects: ObjectDataConfig = field(default_factory=ObjectDataConfig)
    use_view_masking: bool = False  # draw the input-view count per step in [view_min, view_max]
    view_mask_strategy: str = "unified"  # one count for the whole batch (the only one supported)
    view_min: int = 2
    view_max: int = 2
    num_workers: int = 4
    cache_frames: bool = False  # scenes: keep decoded frames in memory (per loading process; pays with num_workers 0)
    num_threads: int = 8
    prefetch_factor: int = 32
    # optimization (reference Efficient-LVSM values)
    batch_size_per_gpu: int = 2
    grad_accum_steps: int = 1
    lr: float = 4e-4
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.05
    warmup: int = 3000
    scheduler_type: str = "cosine"  # both reference trainers: `get("scheduler_type", "cosine")`; "wsd": ours
    decay_fraction: float = 0.2  # scheduler_type "wsd": the share of the steps over which lr falls to 0
    train_steps: int = 100000
    train_epochs: Optional[float] = None  # Efficient-LVSM: the run length (training/run_plan.py)
    train_time: Optional[float] = None  # hours; Efficient-LVSM: 12 when unset
    grad_clip_norm: float = 1.0
    allowed_gradnorm_factor: float = 5.0
    # a step whose loss or gradients are not finite: "skip" (ours: skipped on every rank, gradients
    # cleared, the schedule advances) or "reference" (theirs: non-finite gradients set to 0 / +-1e-6
    # and applied; a non-finite last loss holds the update and the schedule, gradients kept)
    nonfinite_steps: str = "skip"
    use_amp: bool = True
    amp_dtype: str = "bf16"
    use_tf32: bool = True
    use_compile: bool = False
    gradient_checkpoint: bool = False
    grad_checkpoint_every: int = 1
    # losses
    l2_loss_weight: float = 1.0
    perceptual_loss_weight: float = 0.5
    lpips_loss_weight: float = 0.0
    enable_repa: bool = False
    proj_loss_weight: float = 0.5
    proj_loss_type: str = "sl1"
    repa_teacher_eval: bool = False  # ours: keep the teacher in eval mode (the reference trains it in train mode)
    perceptual_weights_path: Optional[str] = None  # VGG-19: MatConvNet .mat or a torchvision state dict
    # checkpoints, resume, evaluation and logging
    checkpoint_dir: str = "./experiments/checkpoints"  # also holds metrics.jsonl and images/
    resume: str = "auto"  # "auto" (newest readable checkpoint in checkpoint_dir), "none", or a file
    init_checkpoint: Optional[str] = None  # weights to fine-tune from when not resuming (ours or the reference's)
    resume_ckpt: str = ""  # the reference's: resume from this file, or the newest checkpoint in this folder
    reset_training_state: bool = False  # the reference's: take the weights of the resumed checkpoint only
    keep_checkpoints: int = 3
    device: Optional[str] = None  # "cpu", "cuda" or "cuda:N"; None: CUDA when available
    dist_timeout_minutes: float = 60  # a collective waiting this long for another rank ends the run (frozen rank)
    eval_every: int = 0  # steps between held-out PSNR evaluations (0: never)
    eval_dataset_path: Optional[str] = None
    eval_index_path: Optional[str] = None
    eval_max_scenes: int = 64
    eval_input_views: Optional[int] = None  # input views of the held-out evaluation (None: num_input_views)
    checkpoint_every: int = 2000
    checkpoint_every_epoch: Optional[float] = None  # Efficient-LVSM only
    checkpoint_every_time: Optional[float] = None  # hours; Efficient-LVSM: 1 when unset
    print_every: int = 20
    vis_every: int = 1000
    wandb_project: str = "LVSM"
    wandb_exp_name: str = "efficient_lvsm"
    wandb_log_every: int = 50
    wandb_mode: str = "auto"  # "auto": online with an API key, off without; "online" | "offline" | "disabled"
    api_key_path: Optional[str] = None
    backup_code: bool = False  # copy the source files to checkpoint_dir/src at start (reference)
    log_file: Optional[str] = None  # reference-only (REFERENCE_ONLY below)
    log_grad_norm_details: bool = False  # reference-only
    seed: int = 0


@dataclass
class RenderVideoConfig:
    traj_type: str = "interpolate"
    num_frames: int = 60
    loop_video: bool = True
    order_poses: bool = False


@dataclass
class CacheConfig:
    """The scene cache under a budget, for streams of views (model/stream.py: CacheBudget)."""
    max_views: Optional[int] = None  # views held at most; null: all
    policy: str = "all"  # all, recent, sink_recent, coverage, attention
    sink_views: int = 2  # sink_recent: the stream's first views, never evicted
    select_views: Optional[int] = None  # each render attends to the k nearest held views; null: all
    storage: str = "native"  # native, bf16, fp16, int8 (per view and head scales)
    probe_views: int = 2  # attention: the newest views whose cameras are rendered to score the others
    angle_weight: float = 1.0  # camera distance: centre distance / extent + weight x (1 - cos angle)


@dataclass
class InferenceConfig:
    if_inference: bool = False
    compute_metrics: bool = False
    view_idx_file_path: Optional[str] = "./data/evaluation_index_re10k.json"
    resize: bool = False
    render_video: bool = False
    render_video_config: RenderVideoConfig = field(default_factory=RenderVideoConfig)
    generate_website: bool = True  # index.html gallery (LVSM's default; Efficient-LVSM's is false)
    use_incremental_inference: bool = False
    checkpoint_dir: Optional[str] = None  # the reference's name for the checkpoint file to evaluate
    inference_out_dir: Optional[str] = None
    # LPIPS-VGG without torchvision (utils/lpips_vgg.py): torchvision's VGG-16 state dict
    # (vgg16-397923af.pth) and the lpips package's linear heads (lpips/weights/v0.1/vgg.pth; None: the
    # copy inside an installed lpips package). Without the VGG-16 file the lpips package is tried.
    lpips_vgg16_path: Optional[str] = None
    lpips_heads_path: Optional[str] = None
    lpips_autocast: bool = True  # LPIPS under the evaluation's autocast (bf16 on GPU with use_amp), as the reference
    # objects: the first N entries of the list are evaluated (the reference's object loader: 100); null: all
    eval_objects: Optional[int] = 100
    cache: CacheConfig = field(default_factory=CacheConfig)  # streams: scripts/stream_replay.py, the demo


@dataclass
class DemoConfig:
    rotate_x: float = 0.0
    rotate_y: float = 0.0
    rotate_z: float = 0.0
    translate_x: float = 0.0
    translate_y: float = 0.0
    translate_z: float = 0.0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    inference_out_dir: Optional[str] = None  # LVSM's eval command sets it at the top level


# Keys accepted only so that the reference implementations' files load: no code here reads them (a
# test checks that every other key is read). A config that sets one to a value other than the
# schema's default gets one warning at start naming it (`inert_key_warnings`). README: "Coming from
# LVSM or Efficient-LVSM" lists these, the keys we read, and those we reject.
REFERENCE_ONLY = {
    "training.dataset_len": "the reference overwrites it with the dataset's length too",
    "training.center_crop": "no reference code reads it; training.square_crop decides the crop",
    "training.use_rel_pose": "no reference code reads it",
    "training.num_threads": "the reference copies it into OMP_NUM_THREADS once torch is imported; here threads "
                            "follow the environment: set OMP_NUM_THREADS before launching",
    "training.log_file": "logs go to stdout and checkpoint_dir/metrics.jsonl",
    "training.log_grad_norm_details": "per-layer gradient norms are not logged",
    "model.transformer.attention_arch": "attention always runs through scaled_dot_product_attention (the same "
                                        "function as 'flash' or 'flex'; PyTorch picks the kernel)",
    "model.image_tokenizer.source": "the reference's torch.hub source; the REPA teacher loads through transformers "
                                    "from model.image_tokenizer.model_path",
    "model.image_tokenizer.model_source_dir": "the reference's torch.hub repository folder; the REPA teacher loads "
                                              "through transformers from model.image_tokenizer.model_path",
    "model.repa_encoder_type": "the reference never reads it; model.image_tokenizer.type picks the teacher",
    "model.align_resolution": "the reference never reads it",
    "model.freeze_repa_encoder": "the teacher is always frozen (the reference's runs it under no_grad either way)",
    "inference.if_inference": "inference.py always evaluates (scenes at the index, objects in the reference's "
                              "evaluation mode) and train.py always trains",
    "inference.compute_metrics": "evaluation always scores and writes the summary",
    "demo.rotate_x": "no reference code reads the demo section", "demo.rotate_y": "no reference code reads it",
    "demo.rotate_z": "no reference code reads it", "demo.translate_x": "no reference code reads it",
    "demo.translate_y": "no reference code reads it", "demo.translate_z": "no reference code reads it",
}


# Keys the reference implementations read (not in their YAML files) that this code rejects, and why.
REJECTED = {
    "training.dynamic_input_view_num": "it draws 2 to 4 input views per step from numpy's global RNG, different on "
                                       "every rank; use training.use_view_masking with view_min and view_max",
    "training.shuffle_input_views": "attention over input views is order-free in all three models, so shuffling "
                                    "their order changes nothing",
    "inference.extract_features": "the feature dump of the reference's inference_mul.py is not implemented",
    "inference.feature_save_dir": "the feature dump of the reference's inference_mul.py is not implemented",
}


def inert_key_warnings(cfg: DictConfig) -> list[str]:
    """One line for each REFERENCE_ONLY key that `cfg` sets to a value other than its default."""
    default = OmegaConf.structured(Config)
    lines = []
    for key, why in REFERENCE_ONLY.items():
        value = OmegaConf.select(cfg, key)
        if value != OmegaConf.select(default, key):
            lines.append(f"warning: {key}={value!r} has no effect here ({why})")
    return lines


PATHS = schema_paths(Config)  # every valid dotted key -> its type


# Values checked at load (`check_values`), so that train.py, inference.py and every tool fail before any
# work: counts that must be above 0, counts where 0 means "never" or "all", optional amounts above 0.
POSITIVE = ("training.train_steps", "training.checkpoint_every", "training.print_every", "training.wandb_log_every",
            "training.batch_size_per_gpu", "training.grad_accum_steps", "training.grad_checkpoint_every",
            "training.prefetch_factor", "training.eval_max_scenes", "training.dist_timeout_minutes",
            "model.image_tokenizer.image_size", "model.image_tokenizer.patch_size",
            "model.target_pose_tokenizer.image_size", "model.target_pose_tokenizer.patch_size")
NOT_NEGATIVE = {"training.vis_every": "never", "training.eval_every": "never", "training.keep_checkpoints": "keep all",
                "training.num_workers": "load in the training process"}  # key -> what 0 means
POSITIVE_OR_NULL = ("training.train_epochs", "training.train_time", "training.checkpoint_every_epoch",
                    "training.checkpoint_every_time", "training.eval_input_views", "inference.eval_objects")
DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_values(cfg: DictConfig, where: str = "config") -> None:
    """ConfigError naming the first key whose value no run can use (see POSITIVE and the lists above it)."""
    for key in POSITIVE + tuple(NOT_NEGATIVE) + POSITIVE_OR_NULL:
        value = OmegaConf.select(cfg, key)
        if value is None and key in POSITIVE_OR_NULL:
            continue  # unset: the family's default applies (training/run_plan.py)
        floor_ok = value >= 0 if key in NOT_NEGATIVE else value > 0
        if value is None or not floor_ok:
            need = f"0 or more (0: {NOT_NEGATIVE[key]})" if key in NOT_NEGATIVE else "above 0"
            raise ConfigError(f"{where}: {key}={value} must be {need}")
    if not 0 < cfg.training.decay_fraction <= 1:
        raise ConfigError(f"{where}: training.decay_fraction={cfg.training.decay_fraction} must be in (0, 1]")
    device = cfg.training.device
    if device is not None and not DEVICE.fullmatch(device):
        raise ConfigError(f"{where}: training.device={device!r} is not one of null (CUDA when available), 'cpu', "
                          "'cuda', 'cuda:N'")
    for section in ("image_tokenizer", "target_pose_tokenizer"):
        tok = cfg.model[section]
        if tok.image_size % tok.patch_size:
            near = sorted({max(1, tok.image_size // tok.patch_size) * tok.patch_size,
                           (tok.image_size // tok.patch_size + 1) * tok.patch_size})
            raise ConfigError(f"{where}: model.{section}.image_size={tok.image_size} is not a multiple of "
                              f"model.{section}.patch_size={tok.patch_size} (the model would see a cropped image "
                              f"or fail at its first forward); use e.g. {' or '.join(map(str, near))}")


def config_from_dict(data: Optional[dict], overrides: Sequence[str] = (), where: str = "config") -> DictConfig:
    """Validated, read-only config from a plain dict (e.g. one stored in a checkpoint): keys, types and
    values (`check_values`)."""
    cfg = build_config(Config, data, overrides, where, REJECTED)
    check_values(cfg, where)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Read a YAML preset, apply `key=value` overrides, validate against the schema."""
    return config_from_dict(read_yaml(path), overrides, where=str(path))
