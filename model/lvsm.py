"""LVSM (Jin et al., ICLR 2025): decoder-only and encoder-decoder.

Decoder-only: for each target view, the tokens of all input views and of that target are
concatenated, LayerNorm-ed, and run through one stack of full self-attention blocks; the target's
tokens are decoded to pixels. Encoder-decoder: learned latent tokens attend jointly with all input
tokens (encoder); each target's tokens then attend jointly with those latents (decoder).
"""

from typing import Optional

import torch
import torch.nn as nn
from einops import rearrange, repeat

from model.blocks import TransformerBlock, call_block, depth_init_std, init_linear, layer_norm
from model.cache import InputViews
from model.config import ModelConfig
from model.tokens import (PLUCKER_CHANNELS, RGB_PLUCKER_CHANNELS, check_views, patch_size_of, patch_tokenizer,
                          pixel_head, posed_images, ray_map, untokenize)


def _blocks(cfg: ModelConfig, n_layer: int) -> nn.ModuleList:
    """A stack of pre-LN blocks with the reference's (depth-scaled) init."""
    t = cfg.transformer
    blocks = nn.ModuleList(
        TransformerBlock(t.d, t.d_head, t.use_qk_norm, norm_affine=True, mlp_ratio=t.mlp_ratio)
        for _ in range(n_layer)
    )
    for idx, block in enumerate(blocks):
        std = depth_init_std(idx, n_layer, t.depth_init) if t.special_init else 0.02
        block.apply(lambda m: init_linear(m, std))
    return blocks


class _LVSMBase(nn.Module):
    """Tokenizers and head shared by both variants (reference key names), and the `encode` /
    `render` calls every model answers: `encode` holds the input views, `render` recomputes."""

    incremental = False  # a new input view changes every token: nothing per view can be cached

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.transformer.d
        self.patch = patch_size_of(cfg)
        self.ray_precision = cfg.ray_precision  # see model.tokens.ray_map
        self.image_tokenizer = patch_tokenizer(RGB_PLUCKER_CHANNELS, self.patch, d)
        self.target_pose_tokenizer = patch_tokenizer(PLUCKER_CHANNELS, self.patch, d)
        self.image_token_decoder = pixel_head(d, self.patch, norm_affine=True)
        self.grad_checkpoint_every = 0  # set by the trainer: see model.blocks.call_block

    def encode(self, images: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor,
               cache: Optional[InputViews] = None) -> InputViews:
        """Hold input views images [b, v, 3, h, w], c2w [b, v, 4, 4], fxfycxcy [b, v, 4] (added to `cache`)."""
        check_views(images, c2w, fxfycxcy, self.patch, "input")
        if cache is None:
            return InputViews.of(images, c2w, fxfycxcy)
        cache.append(images, c2w, fxfycxcy)
        return cache

    def render(self, cache: InputViews, c2w: torch.Tensor, fxfycxcy: torch.Tensor) -> torch.Tensor:
        """Render target cameras [b, v_t, ...] from the held views: the full forward, recomputed."""
        if cache.num_views == 0:
            raise ValueError("no input views are held: encode at least one before rendering")
        return self(cache.images, cache.c2w, cache.fxfycxcy, c2w, fxfycxcy)

    def tokenize(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy):
        """-> input tokens [b, v_in*n, d], target tokens [b*v_t, n, d], (b, h, w)."""
        check_views(images, c2w, fxfycxcy, self.patch, "input")
        b, v_in, _, h, w = images.shape
        check_views(None, target_c2w, target_fxfycxcy, self.patch, "target", image_size=(h, w))
        if target_c2w.shape[0] != b:
            raise ValueError(f"target batch size {target_c2w.shape[0]} differs from the inputs' {b}")
        dtype = self.image_tokenizer[1].weight.dtype
        posed = posed_images(images, c2w, fxfycxcy, self.ray_precision)  # [b, v_in, 9, h, w]
        x = self.image_tokenizer(posed.to(dtype))  # [b*v_in, n, d]
        x = rearrange(x, "(b v) n d -> b (v n) d", b=b)  # [b, v_in*n, d]
        rays = ray_map(target_c2w, target_fxfycxcy, h, w, self.ray_precision)  # [b, v_t, 6, h, w]
        t = self.target_pose_tokenizer(rays.to(dtype))  # [b*v_t, n, d]
        return x, t, (b, h, w)


class LVSMDecoderOnly(_LVSMBase):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.transformer_input_layernorm = layer_norm(cfg.transformer.d, affine=True)
        self.transformer_blocks = _blocks(cfg, cfg.transformer.n_layer)

    def forward(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy) -> torch.Tensor:
        """Inputs [b, v_in, ...], targets [b, v_t, ...] -> renders [b, v_t, 3, h, w]."""
        x, t, (b, h, w) = self.tokenize(images, c2w, fxfycxcy, target_c2w, target_fxfycxcy)
        n = t.shape[1]
        v_t = t.shape[0] // b
        x = repeat(x, "b l d -> (b vt) l d", vt=v_t)  # [b*v_t, v_in*n, d]
        z = self.transformer_input_layernorm(torch.cat([x, t], dim=1))  # [b*v_t, (v_in+1)*n, d]
        for idx, block in enumerate(self.transformer_blocks):
            z = call_block(block, idx, self.grad_checkpoint_every, z)
        return untokenize(self.image_token_decoder(z[:, -n:]), b, h, w, self.patch)  # [b, v_t, 3, h, w]


class LVSMEncoderDecoder(_LVSMBase):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        t = cfg.transformer
        self.n_light_field_latent = nn.Parameter(torch.empty(t.n_latent_vectors, t.d))  # [n_lat, d]
        nn.init.trunc_normal_(self.n_light_field_latent, std=0.02)
        self.transformer_encoder = _blocks(cfg, t.encoder_n_layer)
        # The reference's decoder loop re-initializes only its last block (an indentation slip);
        # every decoder block gets its depth-scaled init here. Checkpoints are unaffected.
        self.transformer_decoder = _blocks(cfg, t.decoder_n_layer)
        self.transformer_input_layernorm_decoder = layer_norm(t.d, affine=True)

    def forward(self, images, c2w, fxfycxcy, target_c2w, target_fxfycxcy) -> torch.Tensor:
        """Inputs [b, v_in, ...], targets [b, v_t, ...] -> renders [b, v_t, 3, h, w]."""
        x, t, (b, h, w) = self.tokenize(images, c2w, fxfycxcy, target_c2w, target_fxfycxcy)
        n, n_lat = t.shape[1], self.n_light_field_latent.shape[0]
        latents = repeat(self.n_light_field_latent, "l d -> b l d", b=b).to(x.dtype)  # [b, n_lat, d]
        z = torch.cat([latents, x], dim=1)  # [b, n_lat + v_in*n, d]
        for idx, block in enumerate(self.transformer_encoder):
            z = call_block(block, idx, self.grad_checkpoint_every, z)
        latents = repeat(z[:, :n_lat], "b l d -> (b vt) l d", vt=t.shape[0] // b)  # [b*v_t, n_lat, d]
        z = self.transformer_input_layernorm_decoder(torch.cat([t, latents], dim=1))  # [b*v_t, n + n_lat, d]
        for idx, block in enumerate(self.transformer_decoder):
            z = call_block(block, idx, self.grad_checkpoint_every, z)
        return untokenize(self.image_token_decoder(z[:, :n]), b, h, w, self.patch)  # [b, v_t, 3, h, w]
