"""TurboViT: our specification of a hierarchical ViT with Hiera-style mask-unit attention and Q-pooling.

TurboViT (Wong et al., "TurboViT: Generating Fast Vision Transformers via Generative Architecture Search",
arXiv 2308.11421) publishes neither code nor an architecture table. The paper describes a hierarchical ViT found by
generative architecture search around the design of Hiera (Ryali et al., arXiv 2306.00989): local attention inside
"mask units" in the early, high-resolution stages, global attention later, and query pooling between stages. The
budget we build to is a bound derived from the paper's reported numbers: at most about 12.7M parameters and 2.2G
MACs at 224² (≈82.1% top-1 reported).

Our specification, and how it was derived:

- Hiera's four-stage skeleton (Hiera-T: depths (1, 2, 7, 2), widths 96·2^i, 28M / 4.9G MACs). A block costs
  ≈12·d² parameters and ≈12·d²·N MACs (N tokens); at every stage N·d² is the same, ≈154M MACs per block at 64·2^i.
  Widths 64·2^i (heads 1, 2, 4, 8) with Hiera-T's depths measure 12.66M / 2.25G, just over the MAC bound, so stage 3
  loses one block: depths (1, 2, 6, 2), measured in docs/backbones.md, inside both bounds.
- A 7x7 stride-4 convolutional patch embedding (Hiera's) to 56x56 tokens, with a learned positional embedding.
- Mask-unit attention: stage 1 attends within 8x8-token mask units, stage 2 within 4x4 (the same image area after
  one pooling); stages 3 and 4 attend globally.
- Q-pooling: the first block of stages 2-4 max-pools its queries 2x2 inside each unit (the residual is projected to
  the new width and pooled the same way), so the resolution halves while keys and values see every token. As in
  Hiera, that block still uses the previous stage's mask units.
- MLP ratio 4, pre-LayerNorm blocks, LayerNorm + mean pooling before the classifier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.backbones.base import Backbone, check_img_size, image_cfg, stage_info
from fastvision.backbones.registry import register_backbone


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * units, window², C); ``window`` = 0 means one unit covering the whole map."""
    batch, height, width, channels = x.shape
    if window == 0:
        return x.reshape(batch, height * width, channels)
    x = x.reshape(batch, height // window, window, width // window, window, channels).transpose(2, 3)
    return x.reshape(-1, window * window, channels)


def from_windows(x: torch.Tensor, batch: int, height: int, width: int, window: int) -> torch.Tensor:
    if window == 0:
        return x.reshape(batch, height, width, -1)
    x = x.reshape(batch, height // window, width // window, window, window, -1).transpose(2, 3)
    return x.reshape(batch, height, width, -1)


def pool_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """2x2 max pooling of the tokens inside each unit: (U, window², C) -> (U, (window/2)², C)."""
    units, _, channels = x.shape
    x = x.reshape(units, window // 2, 2, window // 2, 2, channels)
    return x.amax(dim=(2, 4)).reshape(units, -1, channels)


class MaskUnitAttention(nn.Module):
    """Self-attention inside mask units (``window`` tokens a side; 0: global), with optional 2x2 query pooling."""

    def __init__(self, dim: int, dim_out: int, heads: int, window: int, pool_queries: bool) -> None:
        super().__init__()
        self.heads, self.window, self.pool_queries = heads, window, pool_queries
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        window = self.window
        if window and (height % window or width % window):
            raise ValueError(f"a {height}x{width} token map does not split into {window}x{window} mask units; "
                             f"use img_size divisible by {4 * window * (2 if self.pool_queries else 1)}")  # fmt: skip
        units = to_windows(self.qkv(x), window)  # (U, T, 3*dim_out)
        q, k, v = units.chunk(3, dim=-1)
        if self.pool_queries:
            q = pool_windows(q, window or height)
            height, width, window = height // 2, width // 2, window // 2
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return from_windows(self.proj(out), batch, height, width, window)


class TurboBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, window: int, pool_queries: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MaskUnitAttention(dim, dim_out, heads, window, pool_queries)
        self.residual = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.window, self.pool_queries = window, pool_queries
        self.norm2 = nn.LayerNorm(dim_out)
        self.mlp = nn.Sequential(nn.Linear(dim_out, 4 * dim_out), nn.GELU(), nn.Linear(4 * dim_out, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        shortcut = x
        if self.residual is not None:  # Hiera projects the normed input to the new width before pooling it
            shortcut = self.residual(normed)
        if self.pool_queries:
            batch, height, width, _ = shortcut.shape
            window = self.window or height
            pooled = pool_windows(to_windows(shortcut, window), window)
            shortcut = from_windows(pooled, batch, height // 2, width // 2, window // 2)
        x = shortcut + self.attn(normed)
        return x + self.mlp(self.norm2(x))


class TurboViT(Backbone):
    def __init__(
        self,
        embed_dim: int = 64,
        depths: tuple[int, ...] = (1, 2, 6, 2),
        heads: tuple[int, ...] = (1, 2, 4, 8),
        mask_units: tuple[int, ...] = (8, 4, 0, 0),
        img_size: int = 224,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_img_size(img_size, len(depths), "TurboViT")
        dims = [embed_dim * 2**index for index in range(len(depths))]
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, 7, stride=4, padding=3)
        tokens = img_size // 4
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, tokens, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        stages = []
        for index, depth in enumerate(depths):
            blocks = []
            for position in range(depth):
                transition = index > 0 and position == 0
                window = mask_units[index - 1] if transition else mask_units[index]  # Hiera's lagged mask units
                dim_in = dims[index - 1] if transition else dims[index]
                blocks.append(TurboBlock(dim_in, dims[index], heads[index], window, pool_queries=transition))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(dims[-1])
        self.feature_info = stage_info(dims, [2 ** (index + 2) for index in range(len(depths))])
        self.default_cfg = image_cfg(img_size)
        self.reset_classifier(num_classes)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x).permute(0, 2, 3, 1) + self.pos_embed
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x.permute(0, 3, 1, 2))
        return outputs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.norm(x.mean(dim=(2, 3)))
        return pooled if pre_logits else self.head(pooled)


@register_backbone
def turbovit(img_size: int = 224, **kwargs: Any) -> TurboViT:
    """TurboViT (our specification, see the module docstring): widths 64·2^i, depths (1, 2, 6, 2)."""
    return TurboViT(img_size=img_size, **kwargs)
