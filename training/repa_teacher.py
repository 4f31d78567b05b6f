"""REPA's frozen teacher: DINOv2 or DINOv3 read through `transformers` from a local folder.

What it returns is what Efficient-LVSM aligns to (`get_repa_feature`, `forward_features` and
`forward_features_v3` in model/efficient_lvsm.py of github.com/Ayakaee/Efficient-LVSM), step by step:

1. images in [0, 1] ImageNet-normalized (torchvision `Normalize`);
2. bicubic resize to a square of 336 px (DINOv2, patch 14: 24 x 24 tokens) or 512 px (DINOv3,
   patch 16: 32 x 32 tokens), `F.interpolate(x, size=..., mode='bicubic')`: no align_corners,
   no antialias;
3. the output of teacher block T (1-based), before the final norm, with the prefix tokens dropped
   (class token, then the register / storage tokens: 1 for the reference's dinov2_vitb14, 1 + 4 for
   dinov3_vitb16; here 1 + the config's num_register_tokens);
4. the token grid resized bicubically (align_corners=False, no antialias) to the renderer's grid.
   The reference hard-codes 32 x 32 (256 px images, patch 8); here it is the images' h/p x w/p.

DINOv2 only: the reference resamples the hub model's position table to the renderer's token grid
when it builds the teacher (timm `resample_abs_pos_embed`: bicubic, antialias), and DINOv2's own
`interpolate_pos_encoding` resamples it again to the 336-px input (bicubic with scale factor
(t + 0.1) / grid, no antialias). `reference_position_table` computes that table once; transformers,
given a table of the input's size, uses it unchanged. DINOv3 uses RoPE: nothing to resample.
"""

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from utils.config import ConfigError

# timm's IMAGENET_DEFAULT_MEAN / _STD, as the reference (efficient_lvsm.py, top).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# model.image_tokenizer.type -> config.json model_type -> (transformers class, attribute holding `.layer`).
TEACHERS = {
    "dinov2": {"dinov2": ("Dinov2Model", "encoder"), "dinov2_with_registers": ("Dinov2WithRegistersModel", "encoder")},
    "dinov3": {"dinov3_vit": ("DINOv3ViTModel", "model")},
}
# Side of the square the teacher sees: reference get_repa_feature, `size=336` / `size=512`.
TEACHER_IMAGE_SIZE = {"dinov2": 336, "dinov3": 512}
# The checkpoints the reference loads through torch.hub (dinov2_vitb14, dinov3_vitb16), on the HF hub.
HUB_IDS = {"dinov2": "facebook/dinov2-base", "dinov3": "facebook/dinov3-vitb16-pretrain-lvd1689m"}
# DINOv2's interpolate_pos_encoding adds 0.1 to the target grid (dinov2 vision_transformer.py,
# interpolate_offset; github.com/facebookresearch/dino/issues/8).
DINOV2_INTERPOLATE_OFFSET = 0.1


def download_hint(kind: str, path) -> str:
    hub_id = HUB_IDS.get(kind, HUB_IDS["dinov2"])
    return (f"put a Hugging Face {kind} folder there, e.g. on a machine with internet: python -c \"from transformers "
            f"import AutoModel; AutoModel.from_pretrained('{hub_id}').save_pretrained('{path}')\"")


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("REPA's teacher needs Hugging Face transformers, the optional extra 'repa': "
                          "pip install -c constraints.txt -e \".[repa]\"") from err
    return transformers


def reference_position_table(table: torch.Tensor, model_grid: int, teacher_grid: int) -> torch.Tensor:
    """DINOv2's position table [1, 1 + M*M, d] as the reference's teacher uses it at a
    teacher_grid x teacher_grid input: resampled to model_grid (timm), then to teacher_grid
    (DINOv2). Returns [1, 1 + teacher_grid**2, d], in the table's dtype."""
    cls, grid = table[:, :1], table[:, 1:].float()
    m = round(grid.shape[1] ** 0.5)
    if m * m != grid.shape[1]:
        raise ValueError(f"DINOv2 position table of {grid.shape[1]} patches is not a square grid")
    grid = rearrange(grid, "1 (h w) d -> 1 d h w", h=m)
    if m != model_grid:  # timm resample_abs_pos_embed returns the table unchanged at its own size
        grid = F.interpolate(grid, size=(model_grid, model_grid), mode="bicubic", antialias=True)
    if model_grid != teacher_grid:  # DINOv2 interpolate_pos_encoding: unchanged at its own size
        scale = (teacher_grid + DINOV2_INTERPOLATE_OFFSET) / model_grid
        grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    assert grid.shape[-2:] == (teacher_grid, teacher_grid), grid.shape
    return torch.cat([cls, rearrange(grid, "1 d h w -> 1 (h w) d").to(table.dtype)], dim=1)


class DinoTeacher(nn.Module):
    """A frozen DINOv2 / DINOv3 (`kind`) from a local `save_pretrained` folder, giving block `layer`'s
    patch features on the renderer's token grid (see the module docstring).

    image_size: the square side the teacher sees (default: the reference's, per kind).
    model_grid: DINOv2 only; the renderer's tokens per side (model.image_tokenizer.image_size //
    patch_size), to which the reference first resamples the position table; None skips that step.
    """

    def __init__(self, path: str | Path, kind: str, layer: int, image_size: Optional[int] = None,
                 model_grid: Optional[int] = None, follow_train_mode: bool = False):
        super().__init__()
        self.follow_train_mode = follow_train_mode
        if kind not in TEACHERS:
            raise ConfigError(f"model.image_tokenizer.type='{kind}' is not a REPA teacher ({' or '.join(TEACHERS)})")
        path = Path(path)
        where = f"model.image_tokenizer.model_path={path}"
        if path.is_file():
            raise FileNotFoundError(f"{where} is a file (the reference's torch.hub checkpoint?); REPA reads a "
                                    f"Hugging Face folder: {download_hint(kind, path.with_suffix(''))}")
        if not path.is_dir():
            raise FileNotFoundError(f"{where}: REPA teacher folder not found; {download_hint(kind, path)}")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{where} is not a Hugging Face checkpoint folder (no config.json); "
                                    f"{download_hint(kind, path)}")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type not in TEACHERS[kind]:
            raise ValueError(f"{config_file}: model_type '{model_type}' is not a {kind} (model.image_tokenizer."
                             f"type={kind} expects {' or '.join(TEACHERS[kind])}); {download_hint(kind, path)}")
        class_name, stack = TEACHERS[kind][model_type]
        try:
            encoder = getattr(_transformers(), class_name).from_pretrained(path, local_files_only=True)
        except OSError as err:
            raise FileNotFoundError(f"cannot load the {kind} weights in {path}: {err}") from err
        blocks = getattr(encoder, stack).layer
        if not 1 <= layer <= len(blocks):
            raise ConfigError(f"model.repa_config: teacher block {layer} is outside 1..{len(blocks)} ({path})")
        del blocks[layer:]  # the blocks after `layer` would be computed for nothing
        cfg = encoder.config
        self.patch = cfg.patch_size
        self.image_size = image_size or TEACHER_IMAGE_SIZE[kind]
        if self.image_size % self.patch:
            raise ValueError(f"REPA teacher image_size={self.image_size} is not a multiple of its patch {self.patch}")
        self.grid = self.image_size // self.patch
        self.prefix = 1 + (cfg.num_register_tokens if model_type != "dinov2" else 0)  # class + registers
        if kind == "dinov2" and model_grid is not None:
            emb = encoder.embeddings
            emb.position_embeddings = nn.Parameter(
                reference_position_table(emb.position_embeddings.data, model_grid, self.grid))
        self.encoder = encoder.requires_grad_(False)
        self.dim = cfg.hidden_size
        self.layer = layer
        self._out: list[torch.Tensor] = []
        blocks[layer - 1].register_forward_hook(lambda module, args, out: self._out.append(out))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "DinoTeacher":
        """Frozen either way. With follow_train_mode (the reference: its model.train() reaches the teacher)
        it takes the trainer's mode, in which the hub DINOv3 (pos_embed_rescale 2) rescales its RoPE
        coordinates at random on every forward; DINOv2 (no dropout, no drop path) computes the same in
        both modes. Without it, always eval."""
        return super().train(mode and self.follow_train_mode)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """images [N, 3, H, W] in [0, 1] -> block `layer`'s patch features [N, gh*gw, dim] (fp32)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"REPA teacher expects images [N, 3, H, W], got {tuple(images.shape)}")
        x = (images.float() - self.mean.float()) / self.std.float()  # [N, 3, H, W]
        side = self.image_size
        x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=False)
        self._out.clear()
        self.encoder(pixel_values=x)
        tokens = self._out.pop()  # [N, prefix + t*t, dim]: block `layer`'s output, before the norm
        feats = rearrange(tokens[:, self.prefix:].float(), "N (th tw) c -> N c th tw", th=self.grid)
        feats = F.interpolate(feats, size=tuple(grid), mode="bicubic", align_corners=False)  # [N, dim, gh, gw]
        return rearrange(feats, "N c gh gw -> N (gh gw) c")  # [N, gh*gw, dim]
