"""Efficient-LVSM and LVSM models: build from a config, load checkpoints, render, cache scenes."""

from model.cache import SceneCache
from model.checkpoint import CheckpointError, load_weights, read_checkpoint
from model.efficient_lvsm import EfficientLVSM
from model.lvsm import LVSMDecoderOnly, LVSMEncoderDecoder
from model.registry import MODELS, build_model, resolve_model_name

__all__ = [
    "SceneCache", "CheckpointError", "load_weights", "read_checkpoint", "EfficientLVSM", "LVSMDecoderOnly",
    "LVSMEncoderDecoder", "MODELS", "build_model", "resolve_model_name",
]
