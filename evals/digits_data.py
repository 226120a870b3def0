"""Digit scenes: a bundled VQA task where *which* image tokens survive pruning decides the answer.

Each 48x48 scene holds 2 to 7 real handwritten digits (scikit-learn's ``load_digits``: 1,797 real 8x8 scans from the
UCI optical-recognition data set, shipped inside the scikit-learn package, so nothing is downloaded) on a lightly
textured paper background. The canvas is a 3x3 grid of 16x16 cells; a digit sits in one cell, at one of 9 offsets
aligned to the 4x4 patches of the bundled model's vision tower, so every digit covers exactly 4 of the 144 image
tokens and at least 116 tokens are background. Classes are distinct within a scene.

Four questions per scene, each with a one-word answer, one per type:

- ``reading``: "what digit is at the top left ?" (an occupied cell) -> "0".."9";
- ``location``: "which row is the 7 in ?" / "which column is the 7 in ?" -> top/middle/bottom, left/center/right;
- ``counting``: "how many digits are there ?" -> "2".."7";
- ``presence``: "is there a 7 ?" -> yes/no (half of them present).

The split is by source scan: a seeded 80/20 split of the 1,797 scans, so no test digit image is ever seen in
training. Scenes are generated deterministically from (split, seed), so the data is the same on every machine.

This follows the finding of VTC-Bench (arXiv 2510.07143) that pruning hurts most where answers depend on small,
localised regions (text, charts), which a single-large-shape task like easy-VQA cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SPLITS = ("train", "test")
QUESTION_TYPES = ("reading", "location", "counting", "presence")
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
CANVAS = 48
CELL = 16
DIGIT = 8
PATCH = 4
GRID = CANVAS // PATCH  # 12 x 12 = 144 image tokens
MIN_DIGITS, MAX_DIGITS = 2, 7  # up to 7 of the 9 cells: a count of up to 28 of 144 tokens
DEFAULT_SCENES = {"train": 8000, "test": 500}
SPLIT_SEED = 0
TEST_FRACTION = 0.2
BACKGROUND_CLASS = 10  # the per-patch label of a patch no digit covers


@dataclass(frozen=True)
class PlacedDigit:
    """One digit of a scene: its class, the source scan's index, its cell (row, column) and pixel offset in it."""

    label: int
    source: int
    row: int
    column: int
    dy: int
    dx: int

    @property
    def top(self) -> int:
        return self.row * CELL + self.dy

    @property
    def left(self) -> int:
        return self.column * CELL + self.dx


@dataclass(frozen=True)
class Scene:
    scene_id: int
    digits: tuple[PlacedDigit, ...]
    texture_seed: int


def _scans() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digit scans (N, 8, 8) with values 0..16, and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "The digits task reads scikit-learn's bundled digit scans: `pip install scikit-learn` "
            "(or `pip install fastvision[eval]`)."
        ) from error
    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def source_indices(split: str) -> np.ndarray:
    """The scans a split may use: a seeded 80/20 split of all 1,797, disjoint between train and test."""
    if split not in SPLITS:
        raise ValueError(f"Unknown digits split {split!r}; splits: {', '.join(SPLITS)}.")
    _, labels = _scans()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    cut = round(len(labels) * TEST_FRACTION)
    return np.sort(order[:cut] if split == "test" else order[cut:])


def make_scenes(split: str, count: int, seed: int = 0) -> list[Scene]:
    """``count`` scenes of ``split``, the same for the same (split, count, seed) on every machine."""
    if count < 1:
        raise ValueError(f"count must be a positive number of scenes, got {count}.")
    _, labels = _scans()
    allowed = source_indices(split)
    by_class = {label: allowed[labels[allowed] == label] for label in range(10)}
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    scenes = []
    for scene_id in range(count):
        number = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
        classes = rng.choice(10, size=number, replace=False)
        cells = rng.choice(9, size=number, replace=False)
        digits = []
        for label, cell in zip(classes, cells, strict=True):
            dy, dx = (int(v) * PATCH for v in rng.integers(0, (CELL - DIGIT) // PATCH + 1, size=2))
            source = int(rng.choice(by_class[int(label)]))
            digits.append(PlacedDigit(int(label), source, int(cell) // 3, int(cell) % 3, dy, dx))
        scenes.append(Scene(scene_id, tuple(digits), int(rng.integers(2**31))))
    return scenes


def render(scene: Scene) -> Any:
    """The scene as a 48x48 RGB PIL image: dark ink on light, faintly textured paper."""
    from PIL import Image

    scans, _ = _scans()
    texture = np.random.default_rng(scene.texture_seed).uniform(-10.0, 10.0, size=(CANVAS, CANVAS))
    canvas = 232.0 + texture
    for digit in scene.digits:
        ink = 255.0 - scans[digit.source] * (230.0 / 16.0)
        window = canvas[digit.top : digit.top + DIGIT, digit.left : digit.left + DIGIT]
        np.minimum(window, ink, out=window)
    gray = np.clip(canvas, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")


def patch_labels(scene: Scene) -> np.ndarray:
    """Per image token (row-major 12x12 patches): the class of the digit covering it, or ``BACKGROUND_CLASS``."""
    labels = np.full((GRID, GRID), BACKGROUND_CLASS, dtype=np.int64)
    span = DIGIT // PATCH
    for digit in scene.digits:
        row, column = digit.top // PATCH, digit.left // PATCH
        labels[row : row + span, column : column + span] = digit.label
    return labels.reshape(-1)


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """The scene's four (question, answer, type) rows, one per type."""
    digits = scene.digits
    target = digits[int(rng.integers(len(digits)))]
    reading = (f"what digit is at the {ROWS[target.row]} {COLUMNS[target.column]} ?", str(target.label), "reading")
    located = digits[int(rng.integers(len(digits)))]
    if rng.random() < 0.5:
        location = (f"which row is the {located.label} in ?", ROWS[located.row], "location")
    else:
        location = (f"which column is the {located.label} in ?", COLUMNS[located.column], "location")
    counting = ("how many digits are there ?", str(len(digits)), "counting")
    present = {digit.label for digit in digits}
    if rng.random() < 0.5:
        asked, answer = digits[int(rng.integers(len(digits)))].label, "yes"
    else:
        asked, answer = int(rng.choice(sorted(set(range(10)) - present))), "no"
    presence = (f"is there a {asked} ?", answer, "presence")
    return [reading, location, counting, presence]


def digits_vocabulary() -> list[str]:
    """Every word of every question template and answer (the bundled model's tokenizer vocabulary)."""
    words = {"what", "digit", "is", "at", "the", "which", "row", "column", "in", "how", "many", "digits", "are",
             "there", "a", "yes", "no", *ROWS, *COLUMNS, *(str(d) for d in range(10))}  # fmt: skip
    return sorted(words)


def load_digits_vqa(split: str = "test", limit: int | None = None, scenes: int | None = None, seed: int = 0) -> Any:
    """One split as a ``datasets.Dataset``: image (PIL), question, answer, image_id, question_type.

    ``scenes`` defaults to 8,000 train / 500 test scenes (4 questions each); ``limit`` keeps the first ``limit``
    questions.
    """
    import datasets

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of questions, got {limit}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown digits split {split!r}; allowed: {', '.join(SPLITS)}.")
    count = DEFAULT_SCENES[split] if scenes is None else scenes
    if limit is not None:
        count = min(count, -(-limit // len(QUESTION_TYPES)))
    made = make_scenes(split, count, seed)
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    columns: dict[str, list] = {"image": [], "question": [], "answer": [], "image_id": [], "question_type": []}
    for scene in made:
        image = render(scene)
        for question, answer, kind in scene_questions(scene, rng):
            columns["image"].append(image)
            columns["question"].append(question)
            columns["answer"].append(answer)
            columns["image_id"].append(scene.scene_id)
            columns["question_type"].append(kind)
    if limit is not None:
        columns = {name: values[:limit] for name, values in columns.items()}
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "image_id": datasets.Value("int64"),
            "question_type": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)
