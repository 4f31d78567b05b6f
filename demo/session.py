"""The incremental demo's logic (no UI): a scene of candidate views, the chosen inputs, a SceneCache.

    model, cfg, _ = load_model("ckpt.pt")                   # evaluation.checkpoint; config from the checkpoint
    scene = load_scene(cfg, "data/test/full_list.txt", "rooms_00000")
    session = DemoSession(model, scene)
    session.add_view(0); session.add_view(5)                # each: the encoder on that view only
    images, cost = session.render_views([3])                # renders from the cache
    session.remove_view(0)                                  # drops its keys/values from the cache

Every step returns a StepCost (wall time, with a CUDA synchronize on GPU, and cache bytes) and is
kept in `session.history`. LVSM models cache nothing per view (`model.incremental` is false):
adding and removing only edit the input list, and each render encodes all current inputs again
(mode "recompute").
Poses are normalized once over all candidate views together, so adding views never moves the frame.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from data.dataset_scene import SceneDataset
from data.factory import build_dataset
from data.scene_format import read_scene_json, read_scene_list
from model import SceneCache
from model.stream import CacheBudget, StreamingScene
from utils.geometry import interpolate_trajectory
from utils.precision import autocast


@dataclass
class SceneViews:
    """Candidate views of one scene, poses normalized over all of them together."""
    images: torch.Tensor  # [v, 3, h, w] in [0, 1]
    c2w: torch.Tensor  # [v, 4, 4], OpenCV
    fxfycxcy: torch.Tensor  # [v, 4], pixels
    frames: list[int]  # frame index in the scene file of each view
    name: str

    def __post_init__(self):
        v = self.images.shape[0]
        if (self.images.dim() != 4 or self.images.shape[1] != 3 or tuple(self.c2w.shape) != (v, 4, 4)
                or tuple(self.fxfycxcy.shape) != (v, 4) or len(self.frames) != v):
            raise ValueError(f"scene {self.name!r}: expected images [v, 3, h, w], c2w [v, 4, 4], fxfycxcy [v, 4] "
                             f"and v frame indices, got {tuple(self.images.shape)}, {tuple(self.c2w.shape)}, "
                             f"{tuple(self.fxfycxcy.shape)}, {len(self.frames)} frames")

    @property
    def num_views(self) -> int:
        return self.images.shape[0]


@dataclass
class StepCost:
    """What one session step cost."""
    action: str  # "add", "remove" or "render"
    view: Optional[int]  # the candidate view added or removed; None for a render
    mode: str  # "incremental" (SceneCache) or "recompute" (no cache: every render re-encodes all inputs)
    wall_ms: float
    cache_bytes: int  # live keys/values after the step; 0 without a cache
    num_inputs: int  # input views after the step
    num_targets: int = 0


def _device(model) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _timed(fn, device: torch.device):
    """(fn(), wall milliseconds); on CUDA the queued work is synchronized before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - start) * 1000.0


class DemoSession:
    """A scene's candidate views, the current input set, and (Efficient-LVSM) its SceneCache.

    amp: render in bf16 under autocast on CUDA (ignored on the CPU, where everything is fp32).
    """

    def __init__(self, model: torch.nn.Module, scene: SceneViews, amp: bool = False):
        self.model, self.scene = model.eval(), scene
        self.device = _device(model)
        self.incremental = model.incremental  # Efficient-LVSM: per-view keys and values can be cached
        self.mode = "incremental" if self.incremental else "recompute"
        self.amp = amp and self.device.type == "cuda"
        self.inputs: list[int] = []  # candidate view ids, in cache order
        self.cache: Optional[SceneCache] = None
        self._cache_ids: dict[int, int] = {}  # candidate view id -> SceneCache view id
        self.history: list[StepCost] = []

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.scene.images.shape[-2:])

    def _autocast(self):
        return autocast(self.device, "bf16", self.amp)

    def _views(self, ids: list[int]):
        """Candidate views as model inputs: images [1, v, 3, h, w], c2w [1, v, 4, 4], fxfycxcy [1, v, 4]."""
        s = self.scene
        return tuple(x[ids][None].to(self.device) for x in (s.images, s.c2w, s.fxfycxcy))

    def _check_view(self, i: int) -> None:
        if not isinstance(i, int) or not 0 <= i < self.scene.num_views:
            raise ValueError(f"view {i!r} is not a candidate view of scene {self.scene.name!r} "
                             f"(0 to {self.scene.num_views - 1})")

    def _record(self, action: str, view: Optional[int], wall_ms: float, num_targets: int = 0) -> StepCost:
        cost = StepCost(action, view, self.mode, wall_ms, self.cache.nbytes() if self.cache is not None else 0,
                        len(self.inputs), num_targets)
        self.history.append(cost)
        return cost

    @torch.no_grad()
    def add_view(self, i: int) -> StepCost:
        """Make candidate view i an input: encode that view only and append it to the cache."""
        self._check_view(i)
        if i in self.inputs:
            raise ValueError(f"view {i} is already an input (inputs: {self.inputs})")
        wall_ms = 0.0  # recompute mode: nothing to do until the next render
        if self.incremental:
            def step():
                return self.model.encode(*self._views([i]), cache=self.cache)
            with self._autocast():
                self.cache, wall_ms = _timed(step, self.device)
            self._cache_ids[i] = self.cache.view_ids[-1]
        self.inputs.append(i)
        return self._record("add", i, wall_ms)

    def remove_view(self, i: int) -> StepCost:
        """Drop input view i: its keys and values leave the cache; the others stay encoded."""
        if i not in self.inputs:
            raise ValueError(f"view {i!r} is not an input (inputs: {self.inputs})")
        wall_ms = 0.0
        if self.incremental:
            _, wall_ms = _timed(lambda: self.cache.remove(self._cache_ids.pop(i)), self.device)
        self.inputs.remove(i)
        return self._record("remove", i, wall_ms)

    def set_inputs(self, ids: list[int]) -> list[StepCost]:
        """Reach the input set `ids` by removing and adding views one at a time (for a checkbox UI)."""
        for i in ids:
            self._check_view(i)
        costs = [self.remove_view(i) for i in list(self.inputs) if i not in ids]
        return costs + [self.add_view(i) for i in ids if i not in self.inputs]

    @torch.no_grad()
    def render(self, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> tuple[torch.Tensor, StepCost]:
        """Render cameras c2w [v_t, 4, 4], fxfycxcy [v_t, 4] (the scene's normalized frame) from the
        current inputs. Returns (images [v_t, 3, h, w] float32 on the CPU, cost)."""
        if not self.inputs:
            raise ValueError("no input views: add at least one view before rendering")
        if c2w.dim() != 3 or tuple(c2w.shape[1:]) != (4, 4) or tuple(fxfycxcy.shape) != (c2w.shape[0], 4):
            raise ValueError(f"targets must be c2w [v_t, 4, 4] and fxfycxcy [v_t, 4], "
                             f"got {tuple(c2w.shape)} and {tuple(fxfycxcy.shape)}")
        targets = (c2w[None].float().to(self.device), fxfycxcy[None].float().to(self.device))  # [1, v_t, ...]
        if self.incremental:
            def step():
                return self.model.render(self.cache, *targets)
        else:  # every render encodes all current inputs again
            def step():
                return self.model.render(self.model.encode(*self._views(self.inputs)), *targets)
        with self._autocast():
            images, wall_ms = _timed(step, self.device)  # [1, v_t, 3, h, w]
        return images[0].float().cpu(), self._record("render", None, wall_ms, c2w.shape[0])

    def render_views(self, ids: list[int]) -> tuple[torch.Tensor, StepCost]:
        """Render at candidate views' cameras (held-out views to compare with their images)."""
        for i in ids:
            self._check_view(i)
        return self.render(self.scene.c2w[ids], self.scene.fxfycxcy[ids])

    def trajectory(self, num_frames: int, ids: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A camera path through candidate views `ids` (all by default), in order: c2w [num_frames, 4, 4],
        fxfycxcy [num_frames, 4]."""
        ids = list(range(self.scene.num_views)) if ids is None else ids
        return interpolate_trajectory(self.scene.c2w[ids], self.scene.fxfycxcy[ids], num_frames)

    def cost_table(self) -> list[dict]:
        """The history as rows (for a table): every StepCost field, cache in MiB."""
        return [{**asdict(c), "wall_ms": round(c.wall_ms, 2), "cache_mib": round(c.cache_bytes / 2**20, 3)}
                for c in self.history]


def find_scene(list_file: str | Path, scene: str | int) -> tuple[int, Path]:
    """(position in the list, JSON path) of a scene given by name (file stem) or index."""
    paths = read_scene_list(list_file)
    if isinstance(scene, int) or str(scene).isdigit():
        idx = int(scene)
        if not 0 <= idx < len(paths):
            raise ValueError(f"scene index {idx} out of range: {list_file} lists {len(paths)} scenes")
        return idx, paths[idx]
    names = [p.stem for p in paths]
    if scene not in names:
        raise ValueError(f"scene {scene!r} is not in {list_file} (first listed: {names[:5]})")
    return names.index(scene), paths[names.index(scene)]


def load_scene(cfg, list_file: str | Path, scene: str | int, *, frames: Optional[list[int]] = None,
               max_views: Optional[int] = None) -> SceneViews:
    """Views of one scene of a scene list, loaded as the dataset that `cfg` describes loads them
    (image size, crop, pose normalization), the poses normalized over all of them together.
    frames: which frames (default: all, or max_views spread evenly over the scene)."""
    idx, path = find_scene(list_file, scene)
    dataset = build_dataset(cfg, list_file)
    if not isinstance(dataset, SceneDataset):
        raise ValueError(f"training.dataset_name={cfg.training.dataset_name!r}: the demo and the pose check read "
                         "scene lists (training.dataset_name: scene)")
    data = read_scene_json(path)
    if frames is None:
        n = len(data["frames"])
        count = n if max_views is None else min(n, max_views)
        frames = sorted(set(np.rint(np.linspace(0, n - 1, count)).astype(int).tolist()))
    sample = dataset.load(path, data, list(frames), idx)
    return SceneViews(sample["image"], sample["c2w"], sample["fxfycxcy"], list(frames), sample["scene_name"])


class StreamSession:
    """The demo's stream mode: a scene's candidate views arrive one at a time, in order, into a
    StreamingScene under a CacheBudget (model/stream.py); every `holdout`-th candidate is never streamed,
    a held-out target to compare renders with (0: none held out).

        session = StreamSession(model, scene, CacheBudget(max_views=8, policy="coverage"))
        session.add_next(4)                                  # four views arrive
        images, cost = session.render_views([3])             # a held-out candidate
        session.restart(CacheBudget(select_views=4))         # the same stream, another budget
    """

    def __init__(self, model: torch.nn.Module, scene: SceneViews, budget: CacheBudget, holdout: int = 4):
        self.model, self.scene, self.holdout = model.eval(), scene, holdout
        self.device = _device(model)
        self.order = [i for i in range(scene.num_views) if not holdout or i % holdout != holdout - 1]
        self.held_out = [i for i in range(scene.num_views) if i not in self.order]
        self.restart(budget)

    def restart(self, budget: CacheBudget) -> None:
        """An empty stream under `budget`; the history starts afresh."""
        self.budget = budget
        self.stream = StreamingScene(self.model, budget)
        self.candidate: dict[int, int] = {}  # stream view id -> candidate view
        self.history: list[dict] = []

    @property
    def streamed(self) -> int:
        return len(self.candidate)

    @property
    def held(self) -> list[int]:
        """Candidate views whose keys and values the cache holds now, in cache order."""
        return [self.candidate[i] for i in self.stream.view_ids]

    @torch.no_grad()
    def add_next(self, count: int = 1) -> list[dict]:
        """Stream the next `count` candidate views (fewer at the end of the scene); returns their rows."""
        rows = []
        for i in self.order[self.streamed:self.streamed + count]:
            s = self.scene
            info = self.stream.add(s.images[i].to(self.device), s.c2w[i].to(self.device), s.fxfycxcy[i].to(self.device))
            self.candidate[info["id"]] = i
            rows.append({"step": "add", "view": i, "evicted": [self.candidate[e] for e in info["evicted"]],
                         "wall_ms": round(info["add_ms"], 2), "views_held": info["views"],
                         "cache_mib": round(info["bytes"] / 2**20, 4)})
        self.history += rows
        return rows

    def render_views(self, ids: list[int]) -> tuple[torch.Tensor, dict]:
        """Render at candidate views' cameras from the stream's cache: (images [v, 3, h, w], row)."""
        if self.stream.cache is None:
            raise ValueError("no view has arrived yet: stream at least one before rendering")
        for i in ids:
            if not 0 <= i < self.scene.num_views:
                raise ValueError(f"view {i!r} is not a candidate view of scene {self.scene.name!r}")
        s = self.scene
        images, cost = self.stream.render(s.c2w[ids].to(self.device), s.fxfycxcy[ids].to(self.device))
        row = {"step": "render", "view": ids, "evicted": [], "wall_ms": round(cost["render_ms"], 2),
               "views_held": self.stream.cache.num_views, "views_attended": cost["views"],
               "cache_mib": round(self.stream.nbytes() / 2**20, 4)}
        self.history.append(row)
        return images.float().cpu(), row
