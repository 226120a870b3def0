"""Procedural videos of one moving shape, for the TRecViT experiment: six classes that only motion tells apart.

Each clip shows a circle, square or triangle of a random colour on a noisy background. The class is what the shape
does over the clip: move right, left, up or down (1 to 2 pixels a frame), grow or shrink. Any single frame is
compatible with every class, so a model has to combine frames to be right; the shape and colour are distractors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIONS = ("right", "left", "up", "down", "grow", "shrink")
SHAPES = ("circle", "square", "triangle")
FRAME_SIZE = 32


@dataclass(frozen=True)
class VideoSet:
    videos: torch.Tensor  # (N, T, 3, H, W), float in [0, 1]
    labels: torch.Tensor  # (N,), index into ACTIONS

    def __len__(self) -> int:
        return len(self.labels)


def _shape_mask(shape: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Masks of each clip's shape in every frame; the arguments are (N, T) offsets from the centre and radii."""
    inside_circle = dx**2 + dy**2 <= radius**2
    inside_square = (dx.abs() <= radius * 0.85) & (dy.abs() <= radius * 0.85)
    inside_triangle = (dy <= radius * 0.8) & (dy >= 2 * dx.abs() - radius)
    kind = shape[:, None, None, None]
    return torch.where(kind == 0, inside_circle, torch.where(kind == 1, inside_square, inside_triangle))


def make_videos(count: int, frames: int = 8, seed: int = 0, size: int = FRAME_SIZE) -> VideoSet:
    """``count`` clips of ``frames`` frames with balanced random classes, reproducible from ``seed``."""
    if count < 1 or frames < 2:
        raise ValueError(f"need count >= 1 and frames >= 2, got count={count}, frames={frames}")
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    labels = torch.randperm(count, generator=generator) % len(ACTIONS)
    shape = torch.randint(0, len(SHAPES), (count,), generator=generator)
    color = uniform(0.3, 1.0, count, 3)
    scale = size / FRAME_SIZE
    time = torch.arange(frames, dtype=torch.float32)[None, :] / (frames - 1)  # 0 at the first frame, 1 at the last
    travel = uniform(8.0, 14.0, count, 1) * scale * (time - 0.5)  # 8 to 14 pixels over the clip, centred
    growth = uniform(4.0, 6.0, count, 1) * scale * time  # the radius grows (or shrinks) by 4 to 6 pixels
    radius = uniform(4.0, 6.0, count, 1).expand(count, frames) * scale
    radius = torch.where((labels == 4)[:, None], 3.0 * scale + growth, radius)
    radius = torch.where((labels == 5)[:, None], 3.0 * scale + growth.flip(1), radius)
    centre = uniform(0.35, 0.65, count, 2) * size
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0])[labels][:, None]  # image y grows downwards
    moving_x, moving_y = (labels <= 1)[:, None], ((labels == 2) | (labels == 3))[:, None]
    x = centre[:, :1] + torch.where(moving_x, sign * travel, 0.0)
    y = centre[:, 1:] + torch.where(moving_y, sign * travel, 0.0)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = grid[None, None, None, :] - x[:, :, None, None]
    dy = grid[None, None, :, None] - y[:, :, None, None]
    mask = _shape_mask(shape, dx, dy, radius[:, :, None, None])
    background = uniform(0.0, 0.25, count, frames, 3, size, size)
    videos = torch.where(mask[:, :, None], color[:, None, :, None, None], background)
    return VideoSet(videos.contiguous(), labels)
