"""REPA as Efficient-LVSM trains with it: early hidden states aligned to a frozen DINO's features.

REPA (Yu et al., ICLR 2025; github.com/sihyun-yu/REPA) adds a training loss that makes a small MLP
("projector") of one early block's tokens predict the patch features of a frozen pretrained vision
encoder. Efficient-LVSM (github.com/Ayakaee/Efficient-LVSM; its scripts/train.sh runs
`model.image_tokenizer.type=dinov3 training.enable_repa=true model.repa_config=8-2`) applies it on
two streams: the input encoder's tokens after block S against the input images' teacher features,
the target decoder's tokens after block S against the target images', teacher block T each
(`model.repa_config` "T-S"; see `parse_repa_config`). The teacher is `training.repa_teacher.DinoTeacher`;
the hidden states are captured with forward hooks, so the models need no change:

    aligner = build_aligner(cfg, model).to(device)  # teacher, projectors, hooks on the bare model
    # or, by hand:
    teacher = DinoTeacher("pretrained/dinov3-vitb16", "dinov3", layer=8)  # a local folder, never the hub
    aligner = RepaAligner(teacher, cfg.model.transformer.d, align_points(model, parse_repa_config("8-2")),
                          cfg.model.projector_dim, cfg.training.proj_loss_type).attach(model)
    render = model(images, c2w, fxfycxcy, target_c2w, target_fxfycxcy)
    loss = mse + cfg.training.proj_loss_weight * aligner.loss(images, target_images)

`aligner.state_dict()` holds the projectors only: the teacher is not a registered submodule, so it
is neither trained, nor saved, nor put in train mode; it follows the aligner's `.to(...)` moves.
Under DDP wrap the aligner too (`DDP(aligner)(images, target_images)` calls `loss`) so that the
projectors' gradients are averaged across ranks.

One forward per `loss`: a hooked block that runs twice keeps its last output, and `loss` consumes
what was captured. With gradient checkpointing the backward pass re-runs the hooked blocks; what
those re-runs capture is simply replaced by the next forward.
"""

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from model.efficient_lvsm import EfficientLVSM
from model.lvsm import LVSMDecoderOnly, LVSMEncoderDecoder
from training.repa_teacher import TEACHERS, DinoTeacher, download_hint
from utils.config import ConfigError

LOSS_TYPES = ("sl1", "l2", "cos")  # reference model/loss.py calculate_proj_loss
STREAMS = {"": ("input", "target"), "t": ("target",), "i": ("input",)}
REPA_CONFIG_FORMS = ("'T-S' (teacher block T aligned to student block S, 1-based, on the input encoder and "
                     "the target decoder, e.g. '8-2'), 'T-St' (target decoder only) or 'T-Si' (input encoder only)")
# Keys of the reference's model/repa_config.py that align several student blocks: not supported.
REFERENCE_MULTI = frozenset({"12-34", "8-34", "48-23", "48-24", "48-13", "4812-123", "369-123"})


@dataclass(frozen=True)
class RepaSpec:
    """A parsed model.repa_config: teacher block, student block (both 1-based), aligned streams."""
    teacher_layer: int
    student_block: int
    streams: tuple[str, ...]


def parse_repa_config(value) -> RepaSpec:
    """"8-2" -> teacher block 8, student block 2, both streams; "8-2t" target only; "8-2i" input only
    (the reference's repa_map entries of that shape, model/repa_config.py)."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)-(\d+)([ti]?)", text)
    if text in REFERENCE_MULTI:
        raise ConfigError(f"model.repa_config='{text}' aligns several blocks in the reference; only one pair is "
                          f"supported: {REPA_CONFIG_FORMS}")
    if match is None or int(match[1]) < 1 or int(match[2]) < 1:
        raise ConfigError(f"model.repa_config={value!r} is not {REPA_CONFIG_FORMS}")
    return RepaSpec(int(match[1]), int(match[2]), STREAMS[match[3]])


def build_projector(d: int, projector_dim: int, d_teacher: int) -> nn.Sequential:
    """Efficient-LVSM's `_create_repa_projector` (REPA's `build_mlp`): three Linear layers with SiLU,
    PyTorch's default init."""
    return nn.Sequential(
        nn.Linear(d, projector_dim), nn.SiLU(),
        nn.Linear(projector_dim, projector_dim), nn.SiLU(),
        nn.Linear(projector_dim, d_teacher),
    )


def projection_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str) -> torch.Tensor:
    """The reference's `calculate_proj_loss` (model/loss.py), per view, averaged over the R views of
    pred vs target [R, n, d_teacher], in fp32:

    "sl1" / "l2": smooth L1 (beta 1) / squared error summed over channels, divided by d_teacher,
    averaged over tokens; "cos": minus the cosine similarity, averaged over tokens (-1 = aligned).
    The reference falls back to "cos" for any other string; here that is an error.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"training.proj_loss_type='{loss_type}' is not one of {', '.join(LOSS_TYPES)}")
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        if loss_type == "sl1":
            return F.smooth_l1_loss(pred, target)  # = mean over views and tokens of (sum over channels) / d
        if loss_type == "l2":
            return F.mse_loss(pred, target)
        return -(F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(-1).mean()


@dataclass(frozen=True)
class AlignPoint:
    """One aligned layer: the output of `model.<blocks>[index]`, whose rows are the views of
    `images` ("input" | "target") and whose per-view tokens are all of a row ("all") or its
    first / last n tokens ("first" | "last")."""
    blocks: str
    index: int
    images: str
    tokens: str = "all"

    def __post_init__(self):
        if self.images not in ("input", "target"):
            raise ValueError(f"AlignPoint.images='{self.images}' is not 'input' or 'target'")
        if self.tokens not in ("all", "first", "last"):
            raise ValueError(f"AlignPoint.tokens='{self.tokens}' is not 'all', 'first' or 'last'")

    @property
    def key(self) -> str:
        return f"{self.blocks}_{self.index}"  # projector name in the state dict


def align_points(model: nn.Module, spec: RepaSpec) -> list[AlignPoint]:
    """The hooked blocks for a model built by `model.build_model`, as the reference's `pass_layers`
    records them: after encoder block S the input tokens [b*v_in, n, d], after decoder block S the
    target tokens [b*v_t, n, d]. The LVSM models (no REPA in their reference) have no per-view input
    stream: "T-S" aligns their target tokens only, "T-Si" is an error."""
    s = spec.student_block
    if isinstance(model, EfficientLVSM):
        stacks = {"input": ("input_self_attn_blocks", "all"), "target": ("self_cross_blocks", "all")}
    elif isinstance(model, LVSMDecoderOnly):
        stacks = {"target": ("transformer_blocks", "last")}  # rows: [input views' tokens, the target's n]
    elif isinstance(model, LVSMEncoderDecoder):
        stacks = {"target": ("transformer_decoder", "first")}  # rows: [the target's n, latents]
    else:
        raise ValueError(f"no REPA layers known for {type(model).__name__}: pass AlignPoints explicitly")
    streams = [role for role in spec.streams if role in stacks]
    if not streams:
        raise ConfigError(f"model.repa_config aligns the input stream only, which {type(model).__name__} does not "
                          "have (its input views share rows): use 'T-S' or 'T-St'")
    points = []
    for role in streams:
        blocks, tokens = stacks[role]
        depth = len(getattr(model, blocks))
        if not 1 <= s <= depth:
            raise ConfigError(f"model.repa_config: student block {s} is outside 1..{depth} ({blocks} of "
                              f"{type(model).__name__}, model.transformer)")
        points.append(AlignPoint(blocks, s - 1, role, tokens))
    return points


class RepaAligner(nn.Module):
    """Projectors (one per AlignPoint), hooks that capture the aligned blocks' outputs, the loss."""

    def __init__(self, teacher: DinoTeacher, d: int, points: Sequence[AlignPoint], projector_dim: int = 2048,
                 loss_type: str = "sl1"):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"training.proj_loss_type='{loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        if not points:
            raise ValueError("RepaAligner needs at least one AlignPoint")
        keys = [p.key for p in points]
        if len(set(keys)) != len(keys):
            raise ValueError(f"RepaAligner: a block is aligned twice in {keys}")
        self._teacher = (teacher,)  # a tuple: not registered (see the module docstring)
        self.points = tuple(points)
        self.loss_type = loss_type
        self.projectors = nn.ModuleDict({p.key: build_projector(d, projector_dim, teacher.dim) for p in points})
        self._handles: list = []
        self._captured: dict[str, torch.Tensor] = {}
        self._patch: Optional[int] = None

    @property
    def teacher(self) -> DinoTeacher:
        return self._teacher[0]

    def train(self, mode: bool = True) -> "RepaAligner":
        super().train(mode)
        self.teacher.train(mode)  # unregistered, so by hand; DinoTeacher decides whether it follows
        return self

    def _apply(self, fn, recurse=True):
        self.teacher._apply(fn, recurse)  # `.to(device)` moves the unregistered teacher too
        return super()._apply(fn, recurse)

    def attach(self, model: nn.Module) -> "RepaAligner":
        """Hook the aligned blocks of `model` (which must have a `patch` size attribute)."""
        if self._handles:
            raise RuntimeError("RepaAligner is already attached: call detach() first")
        if not isinstance(getattr(model, "patch", None), int):
            raise ValueError(f"{type(model).__name__} has no integer `patch` attribute: REPA needs the patch size")
        for point in self.points:
            blocks = getattr(model, point.blocks, None)
            if not isinstance(blocks, nn.ModuleList):
                raise ValueError(f"{type(model).__name__} has no block list '{point.blocks}'")
            if not 0 <= point.index < len(blocks):
                raise ValueError(f"REPA block {point.blocks}[{point.index}] is outside 0..{len(blocks) - 1}")
            self._handles.append(blocks[point.index].register_forward_hook(self._hook(point.key)))
        self._patch = model.patch
        return self

    def detach(self) -> None:
        """Remove the hooks. States captured so far stay until `loss` consumes them."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextlib.contextmanager
    def capturing(self, model: nn.Module) -> Iterator["RepaAligner"]:
        """Hooks only for the duration of a `with` block (e.g. around one forward)."""
        self.attach(model)
        try:
            yield self
        finally:
            self.detach()

    def _hook(self, key: str):
        def hook(module: nn.Module, args, output) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"REPA block {key} returned {type(output).__name__}, not a tensor")
            self._captured[key] = output
        return hook

    def loss(self, input_images: Optional[torch.Tensor], target_images: torch.Tensor) -> torch.Tensor:
        """Projection loss (fp32 scalar) of the states captured in the last forward, averaged over
        all aligned views (as Efficient-LVSM: per-view losses summed, divided by their count).

        input_images [b, v_in, 3, h, w], target_images [b, v_t, 3, h, w], in [0, 1]; input_images
        may be None when no AlignPoint uses them.
        """
        if self._patch is None:
            raise RuntimeError("RepaAligner.loss before attach(model)")
        captured = {p.key: self._captured.pop(p.key, None) for p in self.points}
        missing = [key for key, x in captured.items() if x is None]
        if missing:
            raise RuntimeError(f"no hidden states captured for {missing}: run the model's forward after attach(model)")
        images = {"input": input_images, "target": target_images}
        feats = {}
        for role in sorted({p.images for p in self.points}):
            feats[role] = self._teacher_features(images[role], f"{role}_images")  # [b*v, n, d_teacher]
        total, rows = 0.0, 0
        for point in self.points:
            target = feats[point.images]
            hidden = self._tokens(captured[point.key], point, target.shape)  # [b*v, n, d]
            proj = self.projectors[point.key]
            if not torch.is_autocast_enabled(hidden.device.type):
                hidden = hidden.to(proj[0].weight.dtype)  # bf16 states, fp32 projector, no autocast
            total = total + projection_loss(proj(hidden), target, self.loss_type) * target.shape[0]
            rows += target.shape[0]
        return total / rows

    forward = loss  # so that DDP(aligner)(input_images, target_images) syncs the projectors

    def _teacher_features(self, images: Optional[torch.Tensor], name: str) -> torch.Tensor:
        if images is None or images.ndim != 5 or images.shape[2] != 3:
            shape = None if images is None else tuple(images.shape)
            raise ValueError(f"REPA: {name} must be [b, v, 3, h, w], got {shape}")
        h, w = images.shape[-2:]
        if h % self._patch or w % self._patch:
            raise ValueError(f"REPA: {name} size {h}x{w} is not a multiple of the patch {self._patch}")
        flat = rearrange(images, "b v c h w -> (b v) c h w")
        return self.teacher(flat, (h // self._patch, w // self._patch))  # [b*v, n, d_teacher]

    @staticmethod
    def _tokens(hidden: torch.Tensor, point: AlignPoint, shape: torch.Size) -> torch.Tensor:
        rows, n = shape[0], shape[1]
        where = f"REPA block {point.blocks}[{point.index}]"
        if hidden.ndim != 3 or hidden.shape[0] != rows:
            raise ValueError(f"{where} gave {tuple(hidden.shape)}; expected {rows} rows ({point.images} views)")
        if point.tokens == "all" and hidden.shape[1] != n:
            raise ValueError(f"{where} gave {hidden.shape[1]} tokens per view; the images give n = {n}")
        if hidden.shape[1] < n:
            raise ValueError(f"{where} gave {hidden.shape[1]} tokens per row, fewer than n = {n}")
        return hidden[:, :n] if point.tokens != "last" else hidden[:, -n:]  # [rows, n, d]


def build_aligner(cfg, model: nn.Module) -> RepaAligner:
    """The aligner a config asks for, attached to the bare `model` (before DDP / torch.compile).

    Reads model.image_tokenizer.{type, model_path, image_size, patch_size}, model.repa_config,
    model.transformer.d, model.projector_dim, training.proj_loss_type and training.repa_teacher_eval. The reference's other REPA
    keys (repa_encoder_type, align_resolution, freeze_repa_encoder, and the image tokenizer's source
    and model_source_dir, which pick its torch.hub loader) are accepted only so the authors' files
    load: their teacher runs under no_grad, frozen or not.
    """
    m = cfg.model
    tok = m.image_tokenizer
    if tok.type not in TEACHERS:
        raise ConfigError(f"training.enable_repa=true needs model.image_tokenizer.type 'dinov2' or 'dinov3' (the "
                          f"REPA teacher), got '{tok.type}'")
    spec = parse_repa_config(m.repa_config)
    points = align_points(model, spec)
    if tok.model_path is None:
        raise ConfigError(f"training.enable_repa=true needs model.image_tokenizer.model_path, a local folder: "
                          f"{download_hint(tok.type, 'pretrained/' + tok.type)}")
    teacher = DinoTeacher(tok.model_path, tok.type, spec.teacher_layer, model_grid=tok.image_size // tok.patch_size,
                          follow_train_mode=not cfg.training.repa_teacher_eval)
    return RepaAligner(teacher, m.transformer.d, points, m.projector_dim, cfg.training.proj_loss_type).attach(model)
