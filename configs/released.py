"""Released checkpoints by name: where each lives on the Hugging Face hub (or, for `showcase`, in this
repository), the config preset it fits, and the numbers its authors report. `resolve_checkpoint`
turns a name into a local file through huggingface_hub (its usual cache, HF_HOME / HF_HUB_CACHE,
HF_HUB_OFFLINE respected); a shipped name gives its file in the checkout; a path is returned as it is.

    path, config = resolve_checkpoint("efficient_lvsm_res256")
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from utils.config import suggest

PRESETS = Path(__file__).resolve().parent
SHIPPED_DIR = PRESETS.parent / "checkpoints"  # checkpoints that ship with the repository


@dataclass(frozen=True)
class Released:
    repo: str  # Hugging Face hub model repository
    filename: str
    config: str  # our preset, beside this file
    note: str
    psnr: Optional[float] = None  # RealEstate10K, as the authors report it (None: not reported)
    ssim: Optional[float] = None
    lpips: Optional[float] = None
    shipped: bool = False  # in this repository (SHIPPED_DIR / filename), not on the hub

    @property
    def config_path(self) -> Path:
        return PRESETS / self.config

    @property
    def local_path(self) -> Path:
        return SHIPPED_DIR / self.filename


RELEASED = {
    # The authors' README (Efficient-LVSM, "Model Zoo"): RealEstate10K, 2 input views.
    "efficient_lvsm_res256": Released("Ayakaee/efficient-lvsm", "efficient_lvsm_res256.pt", "efficient_lvsm_256.yaml",
                                      "Efficient-LVSM, RealEstate10K, 256 px", 28.93, 0.895, 0.102),
    "efficient_lvsm_res512": Released("Ayakaee/efficient-lvsm", "efficient_lvsm_res512.pt", "efficient_lvsm_512.yaml",
                                      "Efficient-LVSM, RealEstate10K, 512 px", 29.86, 0.905, 0.147),
    # The authors' incremental demo checkpoint ("more generalizable"; no numbers published). Its README
    # pairs it with the 256 px demo, so the 256 px preset; a mismatch is a load error listing the keys.
    "efficient_lvsm_inc_demo": Released("Ayakaee/efficient-lvsm", "efficient_lvsm_inc_demo.pt",
                                        "efficient_lvsm_256.yaml", "Efficient-LVSM for the incremental demo, 256 px"),
    # LVSM decoder-only (Jin et al., ICLR 2025), the checkpoint the Efficient-LVSM README downloads; its
    # model table gives PSNR 29.67 on RealEstate10K.
    "lvsm_decoder_only_256": Released("coast01/LVSM", "scene_decoder_only_256.pt", "lvsm_decoder_only.yaml",
                                      "LVSM decoder-only, RealEstate10K, 256 px", 29.67),
    # Ours: trained for hours on 2 CPU cores on the built-in synthetic rooms (scripts/train_showcase.py);
    # its numbers, on held-out synthetic rooms, are in checkpoints/showcase.json.
    "showcase": Released("", "showcase.pt", "showcase.yaml", "Efficient-LVSM, synthetic rooms, 32 px (ships here)",
                         shipped=True),
}


class ReleasedCheckpointError(ValueError):
    """A released name that cannot be turned into a local file (unknown, not cached offline, no hub)."""


def is_released(name: str) -> bool:
    return name in RELEASED


def resolve_checkpoint(name_or_path: str | Path) -> tuple[Path, Optional[Path]]:
    """(local checkpoint file, its config preset or None). An existing path is returned as it is
    (config None: the caller's --config or the checkpoint's own); a released name is downloaded into
    the hub cache, or found there (offline). Anything else is an error listing the released names."""
    text = str(name_or_path)
    path = Path(text)
    if path.exists() or text not in RELEASED:
        if not path.exists() and path.suffix == ".pt" and path.stem in RELEASED:
            raise ReleasedCheckpointError(f"checkpoint file {text!r} not found; the released checkpoint of that name "
                                          f"is {path.stem!r} (no .pt): --checkpoint {path.stem}")
        if not path.exists() and (path.suffix == ".pt" or "/" in text):
            raise ReleasedCheckpointError(f"checkpoint file not found: {text}")
        if not path.exists():
            raise ReleasedCheckpointError(f"checkpoint {text!r} is neither a file nor a released name{suggest(text, RELEASED)}; "
                                          f"released: {', '.join(RELEASED)}")
        return path, None
    entry = RELEASED[text]
    if entry.shipped:
        if not entry.local_path.is_file():
            raise ReleasedCheckpointError(f"{text}: {entry.local_path} is missing from this checkout; it ships with "
                                          "the repository (git checkout -- checkpoints/ brings it back)")
        return entry.local_path, entry.config_path
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as err:
        raise ReleasedCheckpointError(f"{text}: downloading released checkpoints needs huggingface_hub "
                                      f"(pip install huggingface_hub): {err}") from None
    try:
        local = hf_hub_download(entry.repo, entry.filename)
    except LocalEntryNotFoundError as err:  # offline (HF_HUB_OFFLINE=1) or the hub unreachable, and not cached
        raise ReleasedCheckpointError(
            f"{text}: {entry.repo}/{entry.filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"the hub could not be reached{' (HF_HUB_OFFLINE is set)' if constants.HF_HUB_OFFLINE else ''}: "
            f"{str(err).splitlines()[0]}. Download it where there is a network (python scripts/download_checkpoint.py "
            f"{text}) or pass the file's path") from None
    except OSError as err:  # network errors and HTTP errors (huggingface_hub's derive from OSError)
        raise ReleasedCheckpointError(f"{text}: downloading {entry.repo}/{entry.filename} failed: "
                                      f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return Path(local), entry.config_path
