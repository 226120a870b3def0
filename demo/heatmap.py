"""The kept image tokens drawn over the image: FastV's score ranks as a heatmap, dropped tokens darkened.

Visual tokens map onto a square grid of patches when their count is a perfect square (LLaVA-style towers: 144 for the
bundled model, 576 for LLaVA-1.5); the image is shown as the tower saw it (resized and centre-cropped, recovered from
``pixel_values``). Other layouts (tiled or dynamic-resolution towers) get the scores as a strip under the image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

DISPLAY_SIZE = 384


def model_view(pixel_values: torch.Tensor | None, image_processor: Any, fallback: Any) -> Any:
    """The image as the vision tower saw it (un-normalised ``pixel_values``), or ``fallback`` when that is not a
    single ``(1, 3, H, W)`` crop."""
    from PIL import Image

    if pixel_values is None or pixel_values.ndim != 4 or pixel_values.shape[0] != 1:
        return fallback
    mean = torch.tensor(getattr(image_processor, "image_mean", [0.0, 0.0, 0.0])).view(3, 1, 1)
    std = torch.tensor(getattr(image_processor, "image_std", [1.0, 1.0, 1.0])).view(3, 1, 1)
    pixels = (pixel_values[0].float().cpu() * std + mean).clamp(0, 1)
    return Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _colormap(values: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] to RGB with matplotlib's 'inferno' (uint8, shape values.shape + (3,))."""
    import matplotlib

    return (matplotlib.colormaps["inferno"](values)[..., :3] * 255).astype(np.uint8)


def _normalise(scores: np.ndarray) -> np.ndarray:
    """Scores to their rank in [0, 1]: attention scores are heavy-tailed (a few sink tokens take most), so a linear
    scale would paint all but a handful of cells the same colour; the rank shows the order FastV keeps by."""
    if scores.size < 2:
        return np.ones_like(scores)
    return np.argsort(np.argsort(scores, kind="stable"), kind="stable") / (scores.size - 1)


def kept_token_heatmap(view: Any, scores: list[float], kept_positions: list[int], size: int = DISPLAY_SIZE) -> Any:
    """A PIL image: ``view`` blended with the score heatmap; dropped tokens darkened and outlined."""
    from PIL import Image, ImageDraw

    count = len(scores)
    kept = np.zeros(count, dtype=bool)
    kept[kept_positions] = True
    values = _normalise(np.asarray(scores, dtype=np.float64))
    side = math.isqrt(count)
    if side * side != count:
        return _strip(view, values, kept, size)
    base = np.asarray(view.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    cell = size / side
    grid = np.floor(np.arange(size) / cell).astype(int).clip(0, side - 1)
    token = grid[:, None] * side + grid[None, :]  # token index of every pixel, row-major like the tower's patches
    heat = _colormap(values[token]).astype(np.float64)
    blended = 0.55 * base + 0.45 * heat
    blended[~kept[token]] *= 0.25  # dropped tokens: dark
    picture = Image.fromarray(blended.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for index in np.flatnonzero(~kept):
        row, column = divmod(int(index), side)
        box = (column * cell, row * cell, (column + 1) * cell - 1, (row + 1) * cell - 1)
        draw.rectangle(box, outline=(90, 90, 90))
    return picture


def _strip(view: Any, values: np.ndarray, kept: np.ndarray, size: int) -> Any:
    """Non-square token layouts: the image, then one coloured cell per visual token (dropped ones dark)."""
    from PIL import Image

    width, height = view.size
    shown = view.convert("RGB").resize((size, max(1, round(height * size / width))))
    colors = _colormap(values).astype(np.float64)
    colors[~kept] *= 0.25
    strip = np.repeat(colors[None, :, :], 24, axis=0)
    strip_image = Image.fromarray(strip.astype(np.uint8)).resize((size, 24), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (size, shown.height + 28), (255, 255, 255))
    canvas.paste(shown, (0, 0))
    canvas.paste(strip_image, (0, shown.height + 4))
    return canvas
