"""easy-VQA (github.com/vzhou842/easy-VQA, MIT) as a ``datasets.Dataset``, read offline from the installed package.

64x64 images of one coloured shape, with questions about its colour and shape and 13 possible answers; the package's
own train (38,575 questions, 4,000 images) and test (9,673 questions, 1,000 images) splits. The files are read from
the package folder: importing the package is never needed, and its wheel's top-level ``test`` package (which shadows
the standard library's) is never touched.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

SPLITS = ("train", "test")


def easyvqa_root() -> Path:
    """The ``data`` folder of the installed easy-vqa package."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "easy-VQA data not found: install it with `pip install easy-vqa` (or `pip install fastvision[eval]`)."
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (root / "answers.txt").is_file():
        raise FileNotFoundError(f"The easy-vqa package at {root.parent} has no data folder.")
    return root


def easyvqa_answers() -> list[str]:
    """The 13 possible answers, in the package's order."""
    return [line.strip() for line in (easyvqa_root() / "answers.txt").read_text().splitlines() if line.strip()]


def load_easyvqa(split: str = "test", limit: int | None = None) -> Any:
    """One split as a ``datasets.Dataset`` with columns image (PIL, via ``datasets.Image``), question, answer, image_id.

    ``limit`` keeps the first ``limit`` questions (in the package's order).
    """
    import datasets

    if split not in SPLITS:
        raise ValueError(f"Unknown easy-VQA split {split!r}; splits: {', '.join(SPLITS)}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of questions, got {limit}.")
    folder = easyvqa_root() / split
    rows = json.loads((folder / "questions.json").read_text())
    if limit is not None:
        rows = rows[:limit]
    data = {
        "image": [str(folder / "images" / f"{image_id}.png") for _, _, image_id in rows],
        "question": [question for question, _, _ in rows],
        "answer": [answer for _, answer, _ in rows],
        "image_id": [int(image_id) for _, _, image_id in rows],
    }
    return datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())
