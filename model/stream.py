"""Long streams of input views: a SceneCache under a budget, and renders that attend to a few views.

Efficient-LVSM encodes each input view once into its SceneCache, so a stream of views costs one
encoder pass per view; but every render attends to every cached view, and the cache grows with the
stream. `StreamingScene` bounds it (`CacheBudget`):

- `max_views` views at most, one evicted (when a view arrives) by `policy`:
  - "all": no eviction (max_views must be unset);
  - "recent": the oldest view (a sliding window);
  - "sink_recent": the oldest view but the first `sink_views` of the stream, kept for good
    (StreamingLLM's attention sinks, as whole views);
  - "coverage": the most redundant view: the one nearest to another held view, by the camera
    distance below (greedy farthest-point thinning of camera centres and viewing directions); the
    new view itself may go when it is the redundant one;
  - "attention": the view that has received the least cross-attention so far (H2O's heavy hitters,
    Evict3R's attention-score eviction, over whole views): each view's share of the attention
    (model.stream.attention_mass: over layers, heads and queries) is added up over every render since
    it arrived, the stream's own renders and, at each arrival, a probe render of the newest
    `probe_views` held views' cameras; the newest view is never evicted.
- `select_views`: each render attends only to the k held views nearest to its target camera (all
  targets of a call together: the k nearest to any of them, up to k per target), so its cost stays
  flat however many views are held.
- `storage`: the cache's precision ("native", "bf16", "fp16", "int8"; model.cache).

Camera distance between views i and j: |c_i - c_j| / extent + angle_weight * (1 - cos(z_i, z_j)),
centres c and viewing directions z (c2w's third column), extent = the mean distance of the held
cameras from their centroid (so it is unitless; 1 for a single view).

One sample per stream (batch size 1). `add` and `render` report their wall time in milliseconds.
"""

import time
from dataclasses import dataclass
from typing import Optional

import torch

from model.cache import STORAGES, SceneCache

POLICIES = ("all", "recent", "sink_recent", "coverage", "attention")


@dataclass(frozen=True)
class CacheBudget:
    max_views: Optional[int] = None  # None: unbounded
    policy: str = "all"
    sink_views: int = 2  # sink_recent: the first views of the stream, never evicted
    select_views: Optional[int] = None  # per render: attend to the k nearest held views; None: all
    storage: str = "native"
    probe_views: int = 2  # attention: the newest held views whose cameras are rendered to score the others
    angle_weight: float = 1.0  # camera distance: weight of 1 - cos(angle between viewing directions)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"cache policy {self.policy!r} is not one of {list(POLICIES)}")
        if self.storage not in STORAGES:
            raise ValueError(f"cache storage {self.storage!r} is not one of {list(STORAGES)}")
        if self.policy == "all" and self.max_views is not None:
            raise ValueError(f"cache policy 'all' keeps every view: max_views={self.max_views} needs another policy")
        if self.policy != "all" and (self.max_views is None or self.max_views < 1):
            raise ValueError(f"cache policy {self.policy!r} needs max_views >= 1, got {self.max_views}")
        if self.policy == "sink_recent" and not 0 <= self.sink_views < self.max_views:
            raise ValueError(f"sink_views={self.sink_views} must be in [0, max_views={self.max_views})")
        if self.select_views is not None and self.select_views < 1:
            raise ValueError(f"select_views={self.select_views} must be >= 1 or None (all)")
        if self.probe_views < 1 or self.angle_weight < 0:
            raise ValueError(f"probe_views={self.probe_views} must be >= 1 and angle_weight={self.angle_weight} >= 0")

    @classmethod
    def from_config(cls, cache) -> "CacheBudget":
        """From a config's inference.cache section."""
        return cls(cache.max_views, cache.policy, cache.sink_views, cache.select_views, cache.storage,
                   cache.probe_views, cache.angle_weight)


def _elapsed_ms(started: float, device: torch.device) -> float:
    """Milliseconds since time.perf_counter() read `started`, after the device's queued work (CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - started)


def camera_distance(c2w_a: torch.Tensor, c2w_b: torch.Tensor, extent: float, angle_weight: float) -> torch.Tensor:
    """[A, 4, 4], [B, 4, 4] -> [A, B] (see the module docstring)."""
    centres = torch.cdist(c2w_a[:, :3, 3].double(), c2w_b[:, :3, 3].double()) / max(extent, 1e-9)
    za = torch.nn.functional.normalize(c2w_a[:, :3, 2].double(), dim=-1)
    zb = torch.nn.functional.normalize(c2w_b[:, :3, 2].double(), dim=-1)
    return centres + angle_weight * (1 - za @ zb.T)


class StreamingScene:
    """A stream of views into one Efficient-LVSM SceneCache, kept within a CacheBudget."""

    def __init__(self, model: torch.nn.Module, budget: CacheBudget = CacheBudget()):
        if not getattr(model, "incremental", False):
            raise ValueError(f"{type(model).__name__} has no per-view cache to stream into (Efficient-LVSM only)")
        self.model, self.budget = model, budget
        self.cache: Optional[SceneCache] = None
        self.held_c2w = torch.zeros(0, 4, 4, dtype=torch.float64)  # held views' c2w in cache order (CPU)
        self.intrinsics: dict[int, torch.Tensor] = {}  # held view id -> fxfycxcy [4]
        self.arrived = 0  # views added so far
        self.evicted: list[int] = []  # ids, in eviction order
        self.attention: dict[int, float] = {}  # attention policy: held view id -> attention received so far

    @property
    def view_ids(self) -> list[int]:
        return [] if self.cache is None else list(self.cache.view_ids)

    def nbytes(self) -> int:
        return 0 if self.cache is None else self.cache.nbytes()

    def _extent(self) -> float:
        centres = self.held_c2w[:, :3, 3]
        spread = (centres - centres.mean(0)).norm(dim=-1).mean().item()
        return spread if spread > 1e-9 else 1.0

    @torch.no_grad()
    def add(self, image: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> dict:
        """Encode one view (image [3, h, w], c2w [4, 4], fxfycxcy [4]) into the cache, then evict by the
        policy if over budget. Returns {"id", "evicted" (ids), "add_ms", "views", "bytes"}."""
        started = time.perf_counter()
        new = self.model.encode(image[None, None], c2w[None, None], fxfycxcy[None, None])
        if self.cache is None:
            self.cache = SceneCache.from_layers(new.keys, new.values, new.tokens_per_view, new.image_size,
                                                self.budget.storage)
            view_id = self.cache.view_ids[0]
        else:
            view_id = self.cache.append(new.keys, new.values, new.image_size)[0]
        self.held_c2w = torch.cat([self.held_c2w, c2w.detach().double().cpu()[None]])
        self.intrinsics[view_id] = fxfycxcy.detach().cpu()
        self.attention[view_id] = 0.0
        self.arrived += 1
        evicted = []
        b = self.budget
        if b.policy == "attention" and self.cache.num_views > b.max_views:
            probes = self.cache.view_ids[-b.probe_views:]
            self._attend(self.cache, self.held_c2w[-b.probe_views:].float(),
                         torch.stack([self.intrinsics[i] for i in probes]))
        while b.max_views is not None and self.cache.num_views > b.max_views:
            victim = self._victim()
            self.remove(victim)
            evicted.append(victim)
        self.evicted += evicted
        return {"id": view_id, "evicted": evicted, "add_ms": _elapsed_ms(started, self.cache.keys[0].device),
                "views": self.cache.num_views, "bytes": self.cache.nbytes()}

    def remove(self, view_id: int) -> None:
        """Drop a held view (its keys and values, camera and score); KeyError if it is not held."""
        pos = self.cache._position(view_id)
        self.held_c2w = torch.cat([self.held_c2w[:pos], self.held_c2w[pos + 1:]])
        self.cache.remove(view_id)
        del self.intrinsics[view_id], self.attention[view_id]

    def _victim(self) -> int:
        ids, b = self.cache.view_ids, self.budget
        if b.policy == "recent":
            return ids[0]
        if b.policy == "sink_recent":
            return min(i for i in ids if i >= b.sink_views)  # ids count arrivals: the first sink_views stay
        if b.policy == "coverage":
            dist = camera_distance(self.held_c2w, self.held_c2w, self._extent(), b.angle_weight)
            dist.fill_diagonal_(float("inf"))
            # the closest pair (i < j: the first minimum of a symmetric matrix); of the two, the one whose
            # second-nearest neighbour is nearer (the more redundant); ties: the older, i
            i, j = divmod(int(torch.argmin(dist).item()), len(ids))
            second = [torch.sort(dist[k]).values[1].item() if len(ids) > 2 else 0.0 for k in (i, j)]
            return ids[i] if second[0] <= second[1] else ids[j]
        return min(ids[:-1], key=lambda i: self.attention[i])  # the newest stays; ties: the older

    def _attend(self, cache: SceneCache, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> torch.Tensor:
        """Render c2w [v_t, 4, 4] from `cache`, adding each view's attention share to its score;
        returns the render [v_t, 3, h, w]."""
        device = cache.keys[0].device
        out, mass = attention_mass(self.model, cache, c2w[None].to(device), fxfycxcy[None].to(device))
        for view_id, share in zip(cache.view_ids, mass.tolist()):
            self.attention[view_id] += share
        return out[0]

    def nearest(self, c2w: torch.Tensor, k: int) -> list[int]:
        """The ids of the k held views nearest to any of the target cameras c2w [v_t, 4, 4] (round robin
        over the targets, nearest first), in cache order."""
        ids = self.cache.view_ids
        if k >= len(ids):
            return list(ids)
        dist = camera_distance(c2w.detach().double().cpu(), self.held_c2w, self._extent(), self.budget.angle_weight)
        order = torch.argsort(dist, dim=1)  # [v_t, v]
        chosen: list[int] = []
        for rank in range(order.shape[1]):
            for t in range(order.shape[0]):
                pos = int(order[t, rank])
                if pos not in chosen:
                    chosen.append(pos)
                if len(chosen) == k:
                    return [ids[p] for p in sorted(chosen)]
        return [ids[p] for p in sorted(chosen)]

    @torch.no_grad()
    def render(self, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Render targets c2w [v_t, 4, 4], fxfycxcy [v_t, 4] -> ([v_t, 3, h, w], {"render_ms", "views"})."""
        if self.cache is None:
            raise ValueError("the stream holds no views yet: add one before rendering")
        started = time.perf_counter()
        k = self.budget.select_views
        cache = self.cache.subset(self.nearest(c2w, k)) if k is not None and k < self.cache.num_views else self.cache
        if self.budget.policy == "attention":  # the stream's renders count too (H2O)
            out = self._attend(cache, c2w, fxfycxcy)
        else:
            out = self.model.render(cache, c2w[None], fxfycxcy[None])[0]
        return out, {"render_ms": _elapsed_ms(started, out.device), "views": cache.num_views}


@torch.no_grad()
def attention_mass(model: torch.nn.Module, cache: SceneCache, c2w: torch.Tensor,
                   fxfycxcy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention each held view receives when `model` renders targets c2w [1, v_t, 4, 4]: the
    softmax weights summed over the decoder's layers, heads, target tokens and the view's tokens,
    divided by layers x heads x target tokens (so the views' shares sum to 1).
    Returns (the render [1, v_t, 3, h, w], shares [num_views])."""
    n, views = cache.tokens_per_view, cache.num_views
    total = torch.zeros(views, dtype=torch.float64)
    calls = {"n": 0}

    def hook(module, args):
        x, keys = args[0], args[1]  # x [1, Lq, d], keys [1, nh, v*n, dh] (normalized)
        q = module.q_norm(module.to_q(x).unflatten(-1, (-1, module.head_dim)).transpose(1, 2))  # [1, nh, Lq, dh]
        weights = torch.softmax((q.float() @ keys.float().transpose(-1, -2)) * module.head_dim ** -0.5, dim=-1)
        total.add_(weights.sum(dim=(0, 1, 2)).reshape(views, n).sum(-1).double().cpu() / (q.shape[1] * q.shape[2]))
        calls["n"] += 1

    handles = [block.cross_attn.register_forward_pre_hook(hook) for block in model.self_cross_blocks]
    try:
        out = model.render(cache, c2w, fxfycxcy)
    finally:
        for handle in handles:
            handle.remove()
    return out, total / max(calls["n"], 1)
