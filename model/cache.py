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


@dataclass
class SceneCache:
    keys: list[torch.Tensor]  # per layer [b, nh, capacity * n, dh]
    values: list[torch.Tensor]  # per layer [b, nh, capacity * n, dh]
    tokens_per_view: int  # n
    image_size: tuple[int, int]  # (h, w) of the input views; targets render at this size
    view_ids: list[int] = field(default_factory=list)  # id of each held view, in token order
    next_id: int = 0

    @property
    def num_views(self) -> int:
        return len(self.view_ids)

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
        ids = list(range(self.next_id, self.next_id + v_new))
        self.view_ids += ids
        self.next_id += v_new
        return ids

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
        if view_id not in self.view_ids:
            raise KeyError(f"view id {view_id} is not in the cache (held: {self.view_ids})")
        n = self.tokens_per_view
        pos = self.view_ids.index(view_id)
        live = self.num_views * n
        for buf in self.keys + self.values:
            buf[:, :, pos * n:live - n] = buf[:, :, (pos + 1) * n:live].clone()
        self.view_ids.pop(pos)
        return self

    def nbytes(self) -> int:
        """Bytes of the live keys and values."""
        return sum(k.element_size() * k[:, :, :self.num_views * self.tokens_per_view].numel() * 2
                   for k in self.keys)
