"""Efficient-LVSM: decoupled co-refinement attention.

The input encoder runs self-attention within each input view only. Each target-decoder layer runs
self-attention within each target view, then cross-attention from the targets to the encoder's
tokens of the same depth, then an MLP. Because input views never see each other, encoding yields
per-layer keys/values per view, held in a SceneCache; rendering reads the cache. The full forward
is `render(encode(inputs), targets)`: the same path as incremental use.
"""

from typing import Optional

import torch
import torch.nn as nn
from einops import rearrange

from model.blocks import SelfCrossBlock, TransformerBlock, call_block, depth_init_std, init_linear
from model.cache import SceneCache
from model.config import ModelConfig
from model.tokens import (PLUCKER_CHANNELS, RGB_PLUCKER_CHANNELS, check_views, patch_size_of, patch_tokenizer,
                          pixel_head, posed_images, ray_map, untokenize)


class EfficientLVSM(nn.Module):
    incremental = True  # encode a new view into the SceneCache; old views are never recomputed

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        t = cfg.transformer
        self.patch = patch_size_of(cfg)
        self.ray_precision = cfg.ray_precision  # see model.tokens.ray_map
        self.rgbp_tokenizer = patch_tokenizer(RGB_PLUCKER_CHANNELS, self.patch, t.d)
        self.target_pose_tokenizer = patch_tokenizer(PLUCKER_CHANNELS, self.patch, t.d)
        # Efficient-LVSM's LayerNorms carry no parameters (reference: elementwise_affine=False).
        self.input_self_attn_blocks = nn.ModuleList(
            TransformerBlock(t.d, t.d_head, t.use_qk_norm, norm_affine=False, mlp_ratio=t.mlp_ratio)
            for _ in range(t.n_layer)
        )
        self.self_cross_blocks = nn.ModuleList(
            SelfCrossBlock(t.d, t.d_head, t.use_qk_norm, norm_affine=False, mlp_ratio=t.mlp_ratio)
            for _ in range(t.n_layer)
        )
        self.image_token_decoder = pixel_head(t.d, self.patch, norm_affine=False)
        self.grad_checkpoint_every = 0  # set by the trainer: see model.blocks.call_block
        # The reference applies its depth-scaled init to the decoder blocks only; the encoder
        # blocks keep PyTorch's default Linear init. Kept as is, so training matches it.
        for idx, block in enumerate(self.self_cross_blocks):
            std = depth_init_std(idx, t.n_layer, t.depth_init) if t.special_init else 0.02
            block.apply(lambda m: init_linear(m, std))

    def encode(
        self, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor, cache: Optional[SceneCache] = None
    ) -> SceneCache:
        """Run the input encoder on new views and add them to `cache` (a new one if None).

        images [b, v, 3, h, w] in [0, 1]; c2w [b, v, 4, 4] (OpenCV); fxfycxcy [b, v, 4] in pixels.
        Cost: the encoder on these views only. Returns the cache holding old and new views.
        """
        check_views(images, c2w, fxfycxcy, self.patch, "input")
        b, v_in, _, h, w = images.shape
        tok = self.rgbp_tokenizer
        posed = posed_images(images, c2w, fxfycxcy, self.ray_precision)  # [b, v_in, 9, h, w]
        x = tok(posed.to(tok[1].weight.dtype))  # [b*v_in, n, d]
        n = x.shape[1]
        keys, values = [], []
        for idx, (enc, dec) in enumerate(zip(self.input_self_attn_blocks, self.self_cross_blocks)):
            x = call_block(enc, idx, self.grad_checkpoint_every, x)  # [b*v_in, n, d]: within each view
            k, v = dec.input_kv(rearrange(x, "(b v) n d -> b (v n) d", b=b))  # [b, nh, v_in*n, dh]
            keys.append(k)
            values.append(v)
        if cache is None:
            return SceneCache.from_layers(keys, values, n, (h, w))
        cache.append(keys, values, (h, w))
        return cache

    def render(self, cache: SceneCache, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> torch.Tensor:
        """Render target cameras c2w [b, v_t, 4, 4], fxfycxcy [b, v_t, 4] from the views held in
        `cache`, at the input views' size. Returns images [b, v_t, 3, h, w] in (0, 1)."""
        if cache.num_views == 0:
            raise ValueError("the scene cache holds no input views: encode at least one before rendering")
        h, w = cache.image_size
        check_views(None, c2w, fxfycxcy, self.patch, "target", image_size=(h, w))
        b = c2w.shape[0]
        if b != cache.batch_size:
            raise ValueError(f"target batch size {b} differs from the cache's {cache.batch_size}")
        tok = self.target_pose_tokenizer
        t = tok(ray_map(c2w, fxfycxcy, h, w, self.ray_precision).to(tok[1].weight.dtype))  # [b*v_t, n, d]
        for idx, block in enumerate(self.self_cross_blocks):
            t = call_block(block, idx, self.grad_checkpoint_every, t, *cache.layer(idx))  # [b*v_t, n, d]
        return untokenize(self.image_token_decoder(t), b, h, w, self.patch)  # [b, v_t, 3, h, w]

    def forward(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy) -> torch.Tensor:
        """Full render: inputs [b, v_in, ...], targets [b, v_t, ...] -> [b, v_t, 3, h, w]."""
        return self.render(self.encode(images, c2w, fxfycxcy), target_c2w, target_fxfycxcy)
