"""Schema of the `model` section of a config.

A superset of the reference implementations' keys, so their published YAML files load unchanged.
The REPA keys (`image_tokenizer.type` / `model_path`, `repa_config`, `projector_dim`) are read by
the trainer's training/repa.py, never by the renderer; the reference's other REPA keys are accepted
only. Defaults are those of the paper's 256 px Efficient-LVSM (`configs/Efficient-LVSM.yaml` of
the reference).
"""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ImageTokenizerConfig:
    type: str = "none"  # reference: "none" | "dinov2" | "dinov3" (REPA teacher, training only)
    image_size: int = 256
    patch_size: int = 8
    in_channels: int = 9  # RGB + Plücker (o x d, d)
    source: str = "local"  # accepted only: the reference's torch.hub source ("local" or GitHub)
    model_path: Optional[str] = None  # REPA teacher: a transformers save_pretrained folder (training/repa_teacher.py)
    model_source_dir: Optional[str] = None  # accepted only: the reference's torch.hub repo folder


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
    # Rays under autocast: "reference" rounds them as the reference's bf16 training and evaluation
    # did (its released checkpoints saw these rays); "fp32" keeps them exact. Equal without autocast.
    ray_precision: str = "reference"
    # REPA (representation alignment to a frozen vision encoder), read by the trainer (training/repa.py).
    repa_encoder_type: str = "PE-Core-L14"  # accepted only: the reference never reads it (its YAML's value)
    projector_dim: int = 2048  # hidden width of the REPA projector MLP
    freeze_repa_encoder: bool = True  # accepted only: the teacher is always frozen
    align_resolution: bool = False  # accepted only: the reference never reads it
    # "T-S": teacher block T aligned to student block S (1-based) on both streams; "T-St" target
    # decoder only, "T-Si" input encoder only. "8-2" is the authors' run (scripts/train.sh); their
    # YAML's `repa_config: 1` loads as "1" and is an error only when training.enable_repa is on.
    repa_config: str = "8-2"
