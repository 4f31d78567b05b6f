"""Training logs: the start report, the progress bar, a JSONL metrics file that is always written,
optional wandb, image grids, and the source backup.

wandb (training.wandb_mode): "auto" runs online when an API key is found (training.api_key_path: a
bare key, or the reference's YAML `wandb: KEY`; else WANDB_API_KEY) and is off otherwise; "online",
"offline" and "disabled" are wandb's own modes. A missing key, a missing package or no network never
stops training: it warns and logs locally.

The run folder (training.checkpoint_dir) also holds, from rank 0 at every start: `config.yaml`, the
resolved config (a resume with other values first moves the previous one to `config.<time>.yaml`),
`command.txt`, every command line that started or resumed the run, and `wandb_run_id.txt`, so that a
resumed run goes on logging into the same wandb run.
"""

import json
import os
import shlex
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from einops import rearrange
from PIL import Image
from tqdm import tqdm

from configs.schema import inert_key_warnings
from utils.config import to_dict
from utils.images import to_uint8

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _wandb_key(api_key_path: Optional[str]) -> Optional[str]:
    """The key in training.api_key_path, else WANDB_API_KEY. The file holds either the bare key or,
    as the reference's configs/api_keys.yaml, a YAML mapping `wandb: KEY` (other entries ignored)."""
    if api_key_path:
        path = Path(api_key_path)
        if path.is_file():
            text = path.read_text().strip()
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                data = None  # not YAML: a bare key with unusual characters
            if not isinstance(data, dict):
                return text or None
            if data.get("wandb"):
                return str(data["wandb"]).strip()
            warnings.warn(f"training.api_key_path: {path} is a YAML mapping without a 'wandb' entry (expected "
                          "`wandb: YOUR_KEY`); wandb stays offline or off unless WANDB_API_KEY is set")
        else:
            warnings.warn(f"training.api_key_path: {path} not found; wandb stays offline or off")
    return os.environ.get("WANDB_API_KEY")


class TrainLog:
    """Rank 0's logs. Every call is a no-op on other ranks (pass enabled=False)."""

    def __init__(self, out_dir: str | Path, training, config_dict: dict, enabled: bool = True):
        self.enabled, self.wandb = enabled, None
        self.out_dir = Path(out_dir)
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.dropped_path = self.out_dir / "metrics.dropped.jsonl"
        record_start(self.out_dir, config_dict)
        mode = training.wandb_mode
        if mode not in WANDB_MODES:
            raise ValueError(f"training.wandb_mode: {mode!r} is not one of {list(WANDB_MODES)}")
        key = _wandb_key(training.api_key_path) if mode in ("auto", "online") else None
        if mode == "auto":
            mode = "online" if key else "disabled"
        if mode != "disabled":
            self.wandb = self._start_wandb(mode, key, training, config_dict)

    def _start_wandb(self, mode: str, key: Optional[str], training, config_dict: dict):
        try:
            import wandb
        except ImportError:
            warnings.warn("wandb is not installed; logging to metrics.jsonl only")
            return None
        try:
            if key and mode == "online":
                wandb.login(key=key, verify=False)
            id_file = self.out_dir / WANDB_ID_FILE  # a resumed run continues the run this folder started
            run_id = id_file.read_text().strip() if id_file.is_file() else ""
            if not run_id:
                run_id = uuid.uuid4().hex[:12]  # a wandb run id: letters and digits
                _write_atomic(id_file, run_id + "\n")
            return wandb.init(project=training.wandb_project, name=training.wandb_exp_name, config=config_dict,
                              mode=mode, dir=str(self.out_dir), id=run_id, resume="allow")
        except Exception as err:  # wandb raises many types for network and auth failures; none may stop training
            warnings.warn(f"wandb could not start ({type(err).__name__}: {err}); logging to metrics.jsonl only")
            return None

    def metrics(self, step: int, values: dict, to_wandb: bool = True) -> None:
        """Append one JSON line (step, values); with to_wandb, send it to wandb too if running."""
        if not self.enabled:
            return
        record = {"step": step, **{k: (float(v) if isinstance(v, (float, int, np.floating)) else v)
                                   for k, v in values.items()}}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None and to_wandb:
            self.wandb.log(values, step=step)

    def drop_after(self, step: int) -> int:
        """Keep each step once in metrics.jsonl when a run starts at `step` (a resume, or 0): lines of later
        steps (a killed run logged them after its last checkpoint) and unreadable ones (a write cut off) move
        to metrics.dropped.jsonl, so nothing is lost; metrics.jsonl is replaced atomically. Returns how many."""
        if not self.enabled or not self.metrics_path.is_file():
            return 0
        keep, drop = [], []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                logged = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                logged = None  # a torn last line or not a record of ours
            line = line if line.endswith("\n") else line + "\n"
            (keep if logged is not None and logged <= step else drop).append(line)
        if drop:
            with open(self.dropped_path, "a", encoding="utf-8") as f:
                f.writelines(drop)
            tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(keep), encoding="utf-8")
            os.replace(tmp, self.metrics_path)
        return len(drop)

    def images(self, step: int, inputs: torch.Tensor, targets: torch.Tensor, renders: torch.Tensor) -> Optional[Path]:
        """Save a grid for the first sample: inputs in the top row, targets and renders below."""
        if not self.enabled:
            return None
        path = self.out_dir / "images" / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid = image_grid(inputs[0], targets[0], renders[0])
        Image.fromarray(grid).save(path)
        if self.wandb is not None:
            import wandb
            self.wandb.log({"images": wandb.Image(grid, caption="inputs / targets / renders")}, step=step)
        return path

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


WANDB_ID_FILE = "wandb_run_id.txt"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def command_line() -> str:
    """The command that started this process, as a shell would take it again (torchrun's workers see
    train.py's own arguments; WORLD_SIZE says how many there were)."""
    line = shlex.join([Path(sys.executable).name, *sys.argv])
    world = os.environ.get("WORLD_SIZE")
    return f"{line}  # {world} processes (torchrun or another launcher)" if world and world != "1" else line


def record_start(out_dir: Path, config_dict: dict) -> None:
    """config.yaml (the resolved config) and one more line in command.txt; a changed config moves the
    previous config.yaml aside as config.<its time>.yaml rather than losing it."""
    text = yaml.safe_dump(config_dict, sort_keys=False)
    config = out_dir / "config.yaml"
    if config.is_file() and config.read_text() != text:
        old = out_dir / f"config.{time.strftime('%Y%m%d-%H%M%S', time.localtime(config.stat().st_mtime))}.yaml"
        os.replace(config, old)
        print(f"{config}: this start's config differs from the previous one; that one is now {old.name}")
    _write_atomic(config, text)
    with open(out_dir / "command.txt", "a") as f:
        f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} in {os.getcwd()}\n{command_line()}\n")


def image_grid(inputs: torch.Tensor, targets: torch.Tensor, renders: torch.Tensor) -> np.ndarray:
    """inputs [v_in, 3, h, w], targets and renders [v_t, 3, h, w] in [0, 1] -> uint8 [3h, max(v)*w, 3]."""
    v = max(inputs.shape[0], targets.shape[0])
    rows = []
    for views in (inputs, targets, renders):
        views = views.detach().float().clamp(0, 1).cpu()
        pad = torch.zeros(v - views.shape[0], *views.shape[1:])
        rows.append(torch.cat([views, pad]))
    return to_uint8(rearrange(torch.stack(rows), "r v c h w -> c (r h) (v w)"))


BACKUP_SUFFIXES = (".py", ".yaml", ".sh", ".bash", ".json")  # the reference's setup.py list
BACKUP_LIMIT_BYTES = 4 * 1024 * 1024  # the reference's max_size_MB=4.0


def backup_code(out_dir: str | Path) -> Path:
    """training.backup_code: copy this checkout's source files (the reference's suffixes; not hidden
    folders, experiments/, outputs/, wandb/) to out_dir/src/<checkout name>, as the reference does.
    Raises ValueError if they exceed 4 MB, as the reference does, before copying anything."""
    import shutil
    root = Path(__file__).resolve().parents[1]
    skip = {"experiments", "outputs", "wandb", "checkpoints"}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in skip)  # prune .venv, .git, ...
        files += [Path(folder) / n for n in sorted(names) if Path(n).suffix in BACKUP_SUFFIXES]
    size = sum(p.stat().st_size for p in files)
    if size > BACKUP_LIMIT_BYTES:
        raise ValueError(f"training.backup_code: {len(files)} source files under {root} hold {size / 2**20:.1f} MB, "
                         "over the reference's 4 MB limit; set training.backup_code=false")
    dest = Path(out_dir) / "src" / root.name
    for p in files:
        target = dest / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    return dest


# ----------------------------------------------------------------------------- start report, progress bar

def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def start_report(cfg, run, preset: Optional[dict]) -> str:
    """Effective batch, tokens per step, parameters, and the config's differences from the preset."""
    t, tok, dist = cfg.training, cfg.model.image_tokenizer, run.dist
    effective = t.batch_size_per_gpu * dist.world_size * t.grad_accum_steps
    n = (tok.image_size // tok.patch_size) ** 2  # tokens per view, square images
    views = (t.view_max if t.use_view_masking else t.num_input_views) + t.num_target_views  # at most, per sample
    params = sum(p.numel() for p in run.model.parameters())
    lines = [f"model {cfg.model.class_name}: {params / 1e6:.2f}M parameters"
             + (f" + REPA projectors {sum(p.numel() for p in run.repa.parameters() if p.requires_grad) / 1e6:.2f}M"
                if run.repa is not None else ""),
             f"device {dist.device} x {dist.world_size} process(es); amp {'on (' + t.amp_dtype + ')' if run.optim.enabled else 'off'}; "
             f"compile {t.use_compile}; gradient checkpointing {t.gradient_checkpoint}",
             f"effective batch {effective} = {t.batch_size_per_gpu} per process x {dist.world_size} x "
             f"{t.grad_accum_steps} accumulation; tokens per step {effective * views * n:,} "
             f"({views} views x {n} tokens per sample, at most)",
             f"data: {len(run.dataset)} scenes from {t.dataset_path}, {run.sampler.batches_per_epoch} batches per "
             f"epoch per process; steps {run.step} -> {run.plan.total_steps}; checkpoints in {t.checkpoint_dir}",
             run.plan.description]
    lines += [f"warning: {item} has no effect" for item in run.plan.ignored] + inert_key_warnings(cfg)
    if preset is not None:
        now, before = _flatten(to_dict(cfg)), _flatten(preset)
        diff = [f"  {k}: {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
        lines.append("config differs from the preset in:" if diff else "config: the preset unchanged")
        lines += diff
    return "\n".join(lines)


def progress(run, end: int) -> tqdm:
    interactive = sys.stderr.isatty()  # a log file gets a line every 30 s, not every step
    return tqdm(total=end, initial=run.step, desc="train", unit="step", disable=not run.dist.is_main,
                dynamic_ncols=True, mininterval=0.1 if interactive else 30.0)
