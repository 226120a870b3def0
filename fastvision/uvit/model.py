"""U-ViT for text-to-image diffusion (Bao et al., "All are Worth Words: A ViT Backbone for Diffusion Models",
CVPR 2023, arXiv 2209.12152; the text-to-image model of https://github.com/baofff/U-ViT, ``libs/uvit_t2i.py``).

Every input is a token: one time token (sinusoidal embedding), the projected text tokens, then the image patches,
with one learned positional embedding over all of them. ``depth // 2`` in-blocks, a mid-block and ``depth // 2``
out-blocks; each out-block first merges the matching in-block's output through ``skip_linear(cat(x, skip))``, the
long skip. The output predicts the noise ε of each patch, then a 3x3 convolution smooths it. This is early fusion:
the text is in every block. ``fastvision.patch(model, fusion="intermediate", ...)`` converts it in place
(``patches/fusion/uvit.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastvision.uvit.config import UViTConfig


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (cos half, then sin half) of possibly fractional timesteps: (B,) -> (B, dim)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = timesteps[:, None].float() * frequencies.to(timesteps.device)[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def sincos_grid_embedding(dim: int, side: int) -> torch.Tensor:
    """The fixed 2-D sin-cos table of DiT (Peebles & Xie, arXiv 2212.09748) and MAE: (side * side, dim), half the
    channels encoding the row and half the column, each as sin then cos of the position at geometric frequencies.

    ``pos_embed_init="sincos"`` starts U-ViT's learned patch embeddings from it. From the usual tiny random start, a
    small model trained for a few hundred CPU steps has not learned where its patches are: in the fusion experiment
    it drew the captioned colour at a random place (position accuracy 0.28 after 800 steps, chance 0.25; 0.98 to 1.00
    with this start; ``evals/experiments/fusion/results/ablation``).
    """
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.flatten().double()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(columns)], dim=1).float()


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection, computed by SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) -> (B, heads, L, head_dim)."""
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, L, head_dim) -> (B, L, dim)."""
        batch, heads, length, head_dim = x.shape
        return x.transpose(1, 2).reshape(batch, length, heads * head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        out = nn.functional.scaled_dot_product_attention(self.heads(q), self.heads(k), self.heads(v))
        return self.proj(self.merge(out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; out-blocks (``skip=True``) first fuse the long skip with a linear layer."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    """The U-ViT text-to-image noise predictor: ``model(x_t, timesteps, context) -> ε`` with ``x_t`` of shape
    (B, in_chans, image_size, image_size) and ``context`` of shape (B, text_tokens, text_dim)."""

    def __init__(self, config: UViTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = nn.Conv2d(config.in_chans, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.time_embed = (
            nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))
            if config.mlp_time_embed
            else nn.Identity()
        )
        self.context_embed = nn.Linear(config.text_dim, dim)
        self.extras = 1 + config.text_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + config.num_patches, dim))

        def block(skip: bool = False) -> Block:
            return Block(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, skip=skip)

        self.in_blocks = nn.ModuleList([block() for _ in range(config.depth // 2)])
        self.mid_block = block()
        self.out_blocks = nn.ModuleList([block(skip=True) for _ in range(config.depth // 2)])
        self.norm = nn.LayerNorm(dim)
        self.patch_dim = config.patch_size**2 * config.in_chans
        self.decoder_pred = nn.Linear(dim, self.patch_dim)
        self.final_layer = nn.Conv2d(config.in_chans, config.in_chans, 3, padding=1) if config.conv else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if config.pos_embed_init == "sincos":
            side = config.image_size // config.patch_size
            with torch.no_grad():
                self.pos_embed[0, self.extras :] = sincos_grid_embedding(dim, side)
        self.apply(_init_weights)

    def embed(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Time token (B, 1, D), text tokens (B, T, D) and patch tokens (B, N, D), before positional embeddings."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        time_token = self.time_embed(timestep_embedding(timesteps, self.config.embed_dim)).unsqueeze(1)
        return time_token, self.context_embed(context), patches

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) -> ε (B, C, H, W)."""
        patches = self.decoder_pred(self.norm(tokens))
        size, channels = self.config.patch_size, self.config.in_chans
        side, batch = self.config.image_size // size, patches.shape[0]
        image = patches.view(batch, side, side, size, size, channels).permute(0, 5, 1, 3, 2, 4)
        return self.final_layer(image.reshape(batch, channels, side * size, side * size))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        time_token, text, patches = self.embed(x, timesteps, context)
        tokens = torch.cat([time_token, text, patches], dim=1) + self.pos_embed
        skips = []
        for block in self.in_blocks:
            tokens = block(tokens)
            skips.append(tokens)
        tokens = self.mid_block(tokens)
        for block in self.out_blocks:
            tokens = block(tokens, skips.pop())
        return self.decode(tokens[:, self.extras :])


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
