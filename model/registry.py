"""Model names, their aliases in the reference configs, and `build_model`."""

import difflib

import torch.nn as nn

from model.config import ModelConfig
from model.efficient_lvsm import EfficientLVSM
from model.lvsm import LVSMDecoderOnly, LVSMEncoderDecoder

MODELS: dict[str, type[nn.Module]] = {
    "efficient_lvsm": EfficientLVSM,
    "lvsm_decoder_only": LVSMDecoderOnly,
    "lvsm_encoder_decoder": LVSMEncoderDecoder,
}

# `model.class_name` as the reference implementations' published configs write it.
ALIASES: dict[str, str] = {
    "model.efficient_lvsm.Images2LatentScene": "efficient_lvsm",
    "model.LVSM_scene_decoder_only.Images2LatentScene": "lvsm_decoder_only",
    "model.LVSM_scene_encoder_decoder.Images2LatentScene": "lvsm_encoder_decoder",
}


def resolve_model_name(class_name: str) -> str:
    """Canonical model name for a `model.class_name` value (ours or the reference's)."""
    name = ALIASES.get(class_name, class_name)
    if name not in MODELS:
        known = list(MODELS) + list(ALIASES)
        close = difflib.get_close_matches(class_name, known, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"model.class_name='{class_name}' is not a known model{hint}; known: {', '.join(MODELS)}")
    return name


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model that `cfg.class_name` names, randomly initialized as the reference does."""
    return MODELS[resolve_model_name(cfg.class_name)](cfg)
