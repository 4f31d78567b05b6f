"""One loader for our checkpoints and the reference implementations' (`{"model": state_dict}`).

Loading is strict: prefixes from `torch.compile` (`_orig_mod.`) and DDP (`module.`) are stripped, and
what the reference's training adds to its state dict is not the renderer's, so it is passed over here:
the frozen VGG of its loss (`loss_computer.*`), its frozen REPA teacher (`repa_encoder.*`, whenever
`model.image_tokenizer.type` is dinov2/dinov3) and REPA's projectors (`repa_projector.*`, which the
trainer reads: training/reference_ckpt.py). Any other missing or unexpected key, or a shape that
differs, is an error that lists the keys. A file that cannot be read is an error naming it: never a
silent fallback to random weights.
"""

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

# The trainer's checkpoint files: ckpt_<step, 8 digits>.pt (training/checkpoints.py writes them).
NAME = re.compile(r"^ckpt_(\d{8})\.pt$")
STRIPPED_PREFIXES = ("_orig_mod.", "module.")
IGNORED_PREFIXES = ("loss_computer.", "repa_encoder.", "repa_projector.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def checkpoints(folder: str | Path) -> list[Path]:
    """The trainer's checkpoint files in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if NAME.match(p.name)), key=lambda p: p.name)


def reference_checkpoints(folder: str | Path) -> list[Path]:
    """The reference trainer's step checkpoints in `folder` (its `ckpt_<epoch x 100, %f>.pt`), oldest
    first, ordered as its find_checkpoints and load_ckpt order them: by the integer before the first
    '.' of the part after the last '_'. Its time-based `ckpt_t<hours>h.pt` are passed over, as there,
    and so are ours (`checkpoints`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.pt"):
        number = path.name.split("_")[-1].split(".")[0]
        if "ckpt_t" not in path.name and not NAME.match(path.name) and number.isdigit():
            found.append((int(number), path.name, path))
    return [path for _, _, path in sorted(found)]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load a checkpoint as data (weights_only=True) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict with a 'model' state dict")
    return obj


def strip_wrappers(key: str) -> str:
    """A state-dict key without the prefixes torch.compile and DDP add (STRIPPED_PREFIXES)."""
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def model_state_dict(ckpt: dict[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The renderer's weights in a checkpoint dict, keys cleaned of wrapper prefixes."""
    state = ckpt.get("model", ckpt)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: no model state dict found (top-level keys: {sorted(ckpt)[:10]})")
    cleaned = {}
    for key, value in state.items():
        key = strip_wrappers(key)
        if not key.startswith(IGNORED_PREFIXES):
            cleaned[key] = value
    return cleaned


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(model: nn.Module, source: str | Path | dict, name: str | None = None) -> dict[str, Any]:
    """Load a checkpoint (path or already-read dict) into `model`, strictly.

    Returns the checkpoint dict (so callers can read its step, config, ...).
    """
    ckpt = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    name = name or (str(source) if isinstance(source, (str, Path)) else "checkpoint")
    state = model_state_dict(ckpt, name)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"{name} does not fit {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        guess = guess_model_name(state)
        if guess:
            parts.append(f"its keys look like a '{guess}' checkpoint")
        raise CheckpointError("; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{name}: shapes differ from the model's config: {_listing(wrong, 6)}")
    model.load_state_dict(state, strict=True)
    return ckpt


def guess_model_name(state: dict[str, torch.Tensor]) -> str | None:
    """Which of our models a state dict's keys belong to, if any."""
    keys = set(state)
    if any(k.startswith("self_cross_blocks.") for k in keys):
        return "efficient_lvsm"
    if "n_light_field_latent" in keys:
        return "lvsm_encoder_decoder"
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "lvsm_decoder_only"
    return None
