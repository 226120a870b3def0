"""The full-attention baseline TRecViT is measured against: a ViViT-style video transformer with joint space-time
self-attention (Arnab et al., "ViViT: A Video Vision Transformer", arXiv 2103.15691, model 1).

Every 1xpxp patch of every frame is a token, and each layer attends over all T·N tokens at once, so attention
costs grow with (T·N)² where TRecViT's grow with T·N². Positions are a learned spatial embedding plus a learned
temporal one (factorised so one model runs any clip length up to ``max_frames``); a single CLS token classifies
the clip. The blocks are TRecViT's own spatial blocks, so the two models differ only in how they mix over time.
"""

from __future__ import annotations

import torch
from torch import nn

from fastvision.backbones.trecvit import SpatialBlock


class ViViT(nn.Module):
    def __init__(
        self,
        width: int = 64,
        depth: int = 6,
        num_heads: int = 4,
        mlp_dim: int = 128,
        img_size: int = 32,
        patch_size: int = 8,
        num_classes: int = 6,
        max_frames: int = 256,
    ) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.space_embed = nn.Parameter(torch.randn(1, 1, grid * grid, width) * 0.02)
        self.time_embed = nn.Parameter(torch.randn(1, max_frames, 1, width) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(*(SpatialBlock(width, num_heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)
        self.max_frames = max_frames

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, classes)."""
        batch, frames = video.shape[:2]
        if frames > self.max_frames:
            raise ValueError(f"this ViViT has temporal embeddings for {self.max_frames} frames, got {frames}")
        tokens = self.patch_embed(video.flatten(0, 1)).flatten(2).transpose(1, 2)
        tokens = tokens.reshape(batch, frames, -1, tokens.shape[-1]) + self.space_embed + self.time_embed[:, :frames]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens.flatten(1, 2)], dim=1)
        return self.head(self.norm(self.blocks(x))[:, 0])
