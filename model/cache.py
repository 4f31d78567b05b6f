"""SceneCache: the per-layer keys and values of the input views an Efficient-LVSM holds.

Input views never attend to each other, so each view's keys and values depend on that view alone:
adding a view runs the encoder on it only, and removing one deletes its slice. The cache is an
explicit object that the model's `encode` fills and its `render` reads; nothing hides on the module.

Layout: per layer one buffer for keys and one for values, [b, nh, capacity * n, dh], of which the
first `num_views * n` tokens are live. Appending writes into spare capacity (grown by doubling, so
appends cost amortized O(new view)); the full forward's cache holds the encoder's tensors as they are.

Storage (`SceneCache.storage`): "native" keeps the encoder's dtype; "bf16" / "fp16" store keys and
values in that type; "int8" stores them as int8 with one scale per (sample, head, view, layer, keys
or values): x ~ q * amax / 127. `layer` returns them in the compute dtype (a dequantized copy when
the storage differs). `subset` gives a cache of some views only (per-render selection).
"""

from dataclasses import dataclass, field
from typing import Optional

import torch

STORAGES = ("native", "bf16", "fp16", "int8")
_FLOAT_STORAGE = {"bf16": torch.bfloat16, "fp16": torch.float16}


class _HeldViews:
    """Ids of the views a cache holds, in token order: `encode` hands out new ones, `remove` takes one."""
    view_ids: list[int]
    next_id: int

    @property
    def num_views(self) -> int:
        return len(self.view_ids)

    def _new_ids(self, count: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + count))
        self.view_ids += ids
        self.next_id += count
        return ids

    def _position(self, view_id: int) -> int:
        if view_id not in self.view_ids:
            raise KeyError(f"view id {view_id} is not in the cache (held: {self.view_ids})")
        return self.view_ids.index(view_id)


def _quantize(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [b, nh, v*n, dh] -> int8 of the same shape and scales [b, nh, v, 1] (per view and head)."""
    b, nh, L, dh = x.shape
    views = x.float().reshape(b, nh, L // n, n * dh)
    scale = views.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0  # [b, nh, v, 1]
    q = torch.round(views / scale).clamp_(-127, 127).to(torch.int8)
    return q.reshape(b, nh, L, dh), scale


def _dequantize(q: torch.Tensor, scale: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    b, nh, L, dh = q.shape
    return (q.reshape(b, nh, L // n, n * dh).float() * scale).to(dtype).reshape(b, nh, L, dh)


@dataclass
class SceneCache(_HeldViews):
    keys: list[torch.Tensor]  # per layer [b, nh, capacity * n, dh]
    values: list[torch.Tensor]  # per layer [b, nh, capacity * n, dh]
    tokens_per_view: int  # n
    image_size: tuple[int, int]  # (h, w) of the input views; targets render at this size
    view_ids: list[int] = field(default_factory=list)  # id of each held view, in token order
    next_id: int = 0
    storage: str = "native"  # see the module docstring
    compute_dtype: Optional[torch.dtype] = None  # what `layer` returns (the encoder's dtype)
    scales: Optional[list[torch.Tensor]] = None  # int8: per layer, keys then values, [b, nh, capacity, 1]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] // self.tokens_per_view

    def layer(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Live keys and values of layer `idx`, [b, nh, num_views * n, dh] each, in the compute dtype
        (views of the buffers, no copy, for native storage)."""
        live, n = self.num_views * self.tokens_per_view, self.tokens_per_view
        k, v = self.keys[idx][:, :, :live], self.values[idx][:, :, :live]
        if self.storage == "native":
            return k, v
        if self.storage == "int8":
            layers = len(self.keys)
            return (_dequantize(k, self.scales[idx][:, :, :self.num_views], n, self.compute_dtype),
                    _dequantize(v, self.scales[layers + idx][:, :, :self.num_views], n, self.compute_dtype))
        return k.to(self.compute_dtype), v.to(self.compute_dtype)

    @classmethod
    def from_layers(cls, keys, values, tokens_per_view: int, image_size: tuple[int, int],
                    storage: str = "native") -> "SceneCache":
        """A cache holding the views whose per-layer keys/values are given ([b, nh, v*n, dh]), stored
        as `storage` (see the module docstring)."""
        if storage not in STORAGES:
            raise ValueError(f"cache storage {storage!r} is not one of {list(STORAGES)}")
        v = keys[0].shape[2] // tokens_per_view
        cache = cls(list(keys), list(values), tokens_per_view, tuple(image_size), list(range(v)), v, storage,
                    keys[0].dtype)
        if storage != "native":
            cache.keys, cache.values, cache.scales = [], [], [] if storage == "int8" else None
            for k in keys:
                cache.keys.append(cache._stored(k))
            for x in values:
                cache.values.append(cache._stored(x))
        return cache

    def _stored(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, nh, v*n, dh] as the storage holds it; int8 appends its scales to self.scales."""
        if self.storage == "native":
            return x
        if self.storage == "int8":
            q, scale = _quantize(x, self.tokens_per_view)
            self.scales.append(scale)
            return q
        return x.to(_FLOAT_STORAGE[self.storage])

    def subset(self, view_ids: list[int]) -> "SceneCache":
        """A cache (native storage, compute dtype) of these held views only, in the order given: what a
        render that attends to some views alone reads. The copy costs O(len(view_ids))."""
        n = self.tokens_per_view
        pos = torch.tensor([self._position(i) for i in view_ids], device=self.keys[0].device)
        tokens = (pos[:, None] * n + torch.arange(n, device=pos.device)).reshape(-1)
        keys, values = zip(*(self.layer(i) for i in range(len(self.keys))))
        cache = SceneCache.from_layers([k.index_select(2, tokens) for k in keys],
                                       [v.index_select(2, tokens) for v in values], n, self.image_size)
        cache.view_ids, cache.next_id = list(view_ids), self.next_id
        return cache

    def append(self, keys: list[torch.Tensor], values: list[torch.Tensor], image_size) -> list[int]:
        """Add views whose per-layer keys/values are [b, nh, v_new*n, dh]; returns their ids."""
        if tuple(image_size) != self.image_size:
            raise ValueError(f"new views are {image_size[0]}x{image_size[1]} but the cache holds "
                             f"{self.image_size[0]}x{self.image_size[1]} views")
        if keys[0].shape[0] != self.batch_size:
            raise ValueError(f"new views have batch size {keys[0].shape[0]}, the cache {self.batch_size}")
        n = self.tokens_per_view
        v_new = keys[0].shape[2] // n
        start, end = self.num_views * n, (self.num_views + v_new) * n
        if self.num_views + v_new > self.capacity:
            self.reserve(max(self.num_views + v_new, 2 * self.capacity))
        for i, (buf, new) in enumerate(zip(self.keys + self.values, keys + values)):
            if self.storage == "int8":
                q, scale = _quantize(new, n)
                buf[:, :, start:end] = q
                self.scales[i][:, :, self.num_views:self.num_views + v_new] = scale
            else:
                buf[:, :, start:end] = new.to(buf.dtype)
        return self._new_ids(v_new)

    def reserve(self, num_views: int) -> None:
        """Make room for `num_views` views without further reallocation."""
        if num_views <= self.capacity:
            return
        live = self.num_views * self.tokens_per_view
        for bufs in (self.keys, self.values):
            for i, buf in enumerate(bufs):
                b, nh, _, dh = buf.shape
                grown = buf.new_empty(b, nh, num_views * self.tokens_per_view, dh)  # [b, nh, cap*n, dh]
                grown[:, :, :live] = buf[:, :, :live]
                bufs[i] = grown
        for i, scale in enumerate(self.scales or []):
            grown = scale.new_empty(scale.shape[0], scale.shape[1], num_views, 1)
            grown[:, :, :self.num_views] = scale[:, :, :self.num_views]
            self.scales[i] = grown

    def remove(self, view_id: int) -> "SceneCache":
        """Drop the view with this id (as returned by `append`); later views keep their order."""
        n = self.tokens_per_view
        pos = self._position(view_id)
        live = self.num_views * n
        for buf in self.keys + self.values:
            buf[:, :, pos * n:live - n] = buf[:, :, (pos + 1) * n:live].clone()
        for scale in self.scales or []:
            scale[:, :, pos:self.num_views - 1] = scale[:, :, pos + 1:self.num_views].clone()
        self.view_ids.pop(pos)
        return self

    def nbytes(self) -> int:
        """Bytes of the live keys and values (and int8's scales)."""
        live = self.num_views * self.tokens_per_view
        data = sum(k.element_size() * k[:, :, :live].numel() * 2 for k in self.keys)
        return data + sum(s.element_size() * s[:, :, :self.num_views].numel() for s in self.scales or [])


@dataclass
class InputViews(_HeldViews):
    """The input views an LVSM baseline holds, with SceneCache's surface (`view_ids`, `num_views`,
    `remove`, `reserve`, `nbytes`). LVSM's input tokens are encoded jointly with the targets'
    (decoder-only) or with each other (encoder-decoder), so there is nothing per view to cache:
    its `render` recomputes everything from these views."""
    images: torch.Tensor  # [b, v, 3, h, w]
    c2w: torch.Tensor  # [b, v, 4, 4]
    fxfycxcy: torch.Tensor  # [b, v, 4]
    view_ids: list[int] = field(default_factory=list)
    next_id: int = 0

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    @classmethod
    def of(cls, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> "InputViews":
        v = images.shape[1]
        return cls(images, c2w, fxfycxcy, list(range(v)), v)

    def append(self, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> list[int]:
        """Add views [b, v_new, ...]; returns their ids."""
        if tuple(images.shape[-2:]) != self.image_size or images.shape[0] != self.batch_size:
            raise ValueError(f"new views {list(images.shape)} do not match the held views {list(self.images.shape)}")
        self.images = torch.cat([self.images, images], dim=1)
        self.c2w, self.fxfycxcy = torch.cat([self.c2w, c2w], dim=1), torch.cat([self.fxfycxcy, fxfycxcy], dim=1)
        return self._new_ids(images.shape[1])

    def remove(self, view_id: int) -> "InputViews":
        """Drop the view with this id; later views keep their order."""
        pos = self._position(view_id)
        keep = [i for i in range(self.num_views) if i != pos]
        self.images, self.c2w, self.fxfycxcy = (x[:, keep] for x in (self.images, self.c2w, self.fxfycxcy))
        self.view_ids.pop(pos)
        return self

    def reserve(self, num_views: int) -> None:
        """Nothing to reserve: views are concatenated when added."""

    def nbytes(self) -> int:
        """Bytes of cached keys and values: none (the views themselves are inputs, not a cache)."""
        return 0
