"""SceneCache: the per-layer keys and values of the input views an Efficient-LVSM holds.

Input views never attend to each other, so each view's keys and values depend on that view alone:
adding a view runs the encoder on it only, and removing one deletes its slice. The cache is an
explicit object that the model's `encode` fills and its `render` reads; nothing hides on the module.

Layout: per layer one buffer for keys and one for values, [b, nh, capacity * n, dh], of which the
first `num_views * n` tokens are live. Appending writes into spare capacity (grown by doubling, so
appends cost amortized O(new view)); the full forward's cache holds the encoder's tensors as they are.
"""

from dataclasses import dataclass, field

import torch


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


@dataclass
class SceneCache(_HeldViews):
    keys: list[torch.Tensor]  # per layer [b, nh, capacity * n, dh]
    values: list[torch.Tensor]  # per layer [b, nh, capacity * n, dh]
    tokens_per_view: int  # n
    image_size: tuple[int, int]  # (h, w) of the input views; targets render at this size
    view_ids: list[int] = field(default_factory=list)  # id of each held view, in token order
    next_id: int = 0

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] // self.tokens_per_view

    def layer(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Live keys and values of layer `idx`, [b, nh, num_views * n, dh] each (views, no copy)."""
        live = self.num_views * self.tokens_per_view
        return self.keys[idx][:, :, :live], self.values[idx][:, :, :live]

    @classmethod
    def from_layers(cls, keys, values, tokens_per_view: int, image_size: tuple[int, int]) -> "SceneCache":
        """A cache holding the views whose per-layer keys/values are given ([b, nh, v*n, dh])."""
        v = keys[0].shape[2] // tokens_per_view
        return cls(list(keys), list(values), tokens_per_view, tuple(image_size), list(range(v)), v)

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
        for buf, new in zip(self.keys + self.values, keys + values):
            buf[:, :, start:end] = new
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

    def remove(self, view_id: int) -> "SceneCache":
        """Drop the view with this id (as returned by `append`); later views keep their order."""
        n = self.tokens_per_view
        pos = self._position(view_id)
        live = self.num_views * n
        for buf in self.keys + self.values:
            buf[:, :, pos * n:live - n] = buf[:, :, (pos + 1) * n:live].clone()
        self.view_ids.pop(pos)
        return self

    def nbytes(self) -> int:
        """Bytes of the live keys and values."""
        return sum(k.element_size() * k[:, :, :self.num_views * self.tokens_per_view].numel() * 2
                   for k in self.keys)


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
