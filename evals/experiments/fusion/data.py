"""Procedural captioned images for the intermediate-fusion experiment: one coloured shape at one of four places on a
32x32 canvas, captioned in six words ("a red circle on the left", "a blue square at the top").

Every attribute is in the caption and readable from the pixels, so an attribute classifier trained on renders can
score whether a generated image matches its caption (text-image alignment) without any downloaded model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

COLORS = {"red": (220, 50, 40), "green": (40, 170, 70), "blue": (50, 90, 230), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"left": (8, 16), "right": (24, 16), "top": (16, 8), "bottom": (16, 24)}  # shape centre (x, y)
BACKGROUND = (235, 235, 235)
IMAGE_SIZE = 32
NULL_WORD = "<null>"
VOCABULARY = (NULL_WORD, "a", "on", "at", "the", *COLORS, *SHAPES, *POSITIONS)
CAPTION_LENGTH = 6
SHAPE_RADIUS = (7, 8)  # pixels, both ends included


def caption(color: str, shape: str, position: str) -> str:
    place = f"on the {position}" if position in ("left", "right") else f"at the {position}"
    return f"a {color} {shape} {place}"


def tokenize(text: str) -> list[int]:
    """Word ids of a caption (the empty caption is six null words, the unconditional prompt)."""
    words = text.split() or [NULL_WORD] * CAPTION_LENGTH
    unknown = [word for word in words if word not in VOCABULARY]
    if unknown or len(words) != CAPTION_LENGTH:
        raise ValueError(f"Captions are {CAPTION_LENGTH} words from {VOCABULARY}; got {text!r}.")
    return [VOCABULARY.index(word) for word in words]


def render(
    color: str, shape: str, position: str, rng: np.random.Generator, radius: tuple[int, int] = SHAPE_RADIUS
) -> np.ndarray:
    """A (32, 32, 3) uint8 image: the shape (radius drawn from ``radius``, both ends included; centre jittered by up
    to 2 pixels) on a light canvas.

    The default shapes fill half the canvas's width, so a shape on the left may lose up to two columns at the edge.
    Smaller shapes (radius 5 to 6) were harder to learn at CPU budgets (the study's README)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cx, cy = (value + int(rng.integers(-2, 3)) for value in POSITIONS[position])
    low, high = radius
    radius_pixels = int(rng.integers(low, high + 1))
    fill = COLORS[color]
    r = radius_pixels
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return np.asarray(image)


@dataclass(frozen=True)
class CaptionedImages:
    images: torch.Tensor  # (N, 3, 32, 32) float in [-1, 1]
    tokens: torch.Tensor  # (N, 6) long
    labels: torch.Tensor  # (N, 3) long: colour, shape, position indices

    def __len__(self) -> int:
        return int(self.images.shape[0])


def labels_to_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Caption word ids for (colour, shape, position) label rows."""
    colors, positions = list(COLORS), list(POSITIONS)
    return torch.tensor(
        [tokenize(caption(colors[c], SHAPES[s], positions[p])) for c, s, p in labels.tolist()], dtype=torch.long
    )


def make_dataset(count: int, seed: int, radius: tuple[int, int] = SHAPE_RADIUS) -> CaptionedImages:
    """``count`` random captioned renders, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, size, count) for size in (len(COLORS), len(SHAPES), len(POSITIONS))], axis=1)
    colors, positions = list(COLORS), list(POSITIONS)
    pixels = np.stack([render(colors[c], SHAPES[s], positions[p], rng, radius) for c, s, p in labels])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    label_tensor = torch.from_numpy(labels).long()
    return CaptionedImages(images, labels_to_tokens(label_tensor), label_tensor)
