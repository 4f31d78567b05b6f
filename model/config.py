"""Schema of the `model` section of a config.

A superset of the reference implementations' keys, so their published YAML files load unchanged.
Keys that only the reference's REPA/DINO tokenizer variants read (`type`, `source`, `model_path`,
`model_source_dir`, `repa_*`, `projector_dim`) are accepted here and used by the trainer, never
by the renderer. Defaults are those of the paper's 256 px Efficient-LVSM
(`configs/Efficient-LVSM.yaml` of the reference).
"""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ImageTokenizerConfig:
    type: str = "none"  # reference: "none" | "dinov2" | "dinov3" (REPA teacher, training only)
    image_size: int = 256
    patch_size: int = 8
    in_channels: int = 9  # RGB + Plücker (o x d, d)
    source: str = "local"
    model_path: Optional[str] = None
    model_source_dir: Optional[str] = None


@dataclass
class PoseTokenizerConfig:
    image_size: int = 256
    patch_size: int = 8
    in_channels: int = 6  # Plücker (o x d, d)


@dataclass
class TransformerConfig:
    d: int = 768
    d_head: int = 64
    n_layer: int = 12  # Efficient-LVSM: layers of the encoder and of the decoder each; LVSM decoder-only: all
    encoder_n_layer: int = 12  # LVSM encoder-decoder only
    decoder_n_layer: int = 12  # LVSM encoder-decoder only
    n_latent_vectors: int = 3072  # LVSM encoder-decoder only (3 x 32 x 32 in the paper)
    mlp_ratio: int = 4
    special_init: bool = True
    depth_init: bool = True
    use_qk_norm: bool = True
    attention_arch: str = "flash"  # accepted for compatibility; attention always goes through SDPA


@dataclass
class ModelConfig:
    class_name: str = "efficient_lvsm"
    image_tokenizer: ImageTokenizerConfig = field(default_factory=ImageTokenizerConfig)
    target_pose_tokenizer: PoseTokenizerConfig = field(default_factory=PoseTokenizerConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    # REPA (representation alignment to a frozen vision encoder), read by the trainer.
    repa_encoder_type: str = "dinov2-vit-b"
    projector_dim: int = 2048
    freeze_repa_encoder: bool = True
    align_resolution: bool = False
    repa_config: int = 1
