"""Where the kept tokens land: kept-token maps of test images for FastV and the baselines, and digit coverage.

``fastvision heatmaps`` draws, for a few test questions, the image and one map per method (kept patches bright,
dropped ones dimmed, at the same K and ratio), so a reader sees whether FastV's attention ranking keeps the tokens
the answer needs. On the digits task it also measures it over many questions: the share of each method's kept
tokens that lie on a digit (precision) and the share of digit tokens kept (recall), from the scene layouts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fastvision
from fastvision.evals.sweep import method_config

HEATMAP_METHODS = ("fastv", "dart", "divprune", "visionzip", "random", "stride", "pool")
BEFORE_THE_LANGUAGE_MODEL = ("divprune", "visionzip")  # these prune at layer 0, whatever --k the others use


def _kept_grids(model: Any, processor: Any, rows: dict[str, list], config: Any) -> list[np.ndarray]:
    """Per row of ``rows``: the (side, side) bool map of image tokens the patched prefill kept."""
    from fastvision.evals.vqa import encode_batch

    inputs = encode_batch(processor, rows["image"], rows["question"])
    with fastvision.patched(model, config), torch.inference_mode():
        model(**inputs, logits_to_keep=1, use_cache=False)
        record = fastvision.kept_tokens(model)
    if record is None:
        raise RuntimeError(f"The patched model ({config}) pruned nothing on these questions (no image tokens?).")
    grids = []
    for sample in range(len(rows["question"])):
        kept = record.image_kept(sample).numpy()
        side = math.isqrt(len(kept))
        if side * side != len(kept):
            raise ValueError(f"Heatmaps need a square image-token grid; this model gives {len(kept)} tokens.")
        grids.append(kept.reshape(side, side))
    return grids


def kept_maps(
    model: Any, processor: Any, dataset: Any, k: int, ratio: float, methods: list[str], seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """{method: [kept map per dataset row]} for every row of ``dataset``."""
    rows = dataset[:]
    maps = {}
    for method in methods:
        if method not in HEATMAP_METHODS:
            raise ValueError(f"Unknown method {method!r}; allowed: {', '.join(HEATMAP_METHODS)}.")
        config = method_config(method, k, ratio, seed=seed)
        maps[method] = []
        for start in range(0, len(dataset), 64):
            chunk = {name: values[start : start + 64] for name, values in rows.items()}
            maps[method] += _kept_grids(model, processor, chunk, config)
    return maps


def spread_rows(dataset: Any, count: int) -> Any:
    """``count`` rows of distinct images, the j-th taking its image's j-th question (cycling), so types vary too."""
    if "image_id" not in dataset.column_names:
        return dataset.select(range(min(count, len(dataset))))
    by_image: dict[int, list[int]] = {}
    for index, image_id in enumerate(dataset["image_id"]):
        by_image.setdefault(image_id, []).append(index)
    rows = [indices[j % len(indices)] for j, indices in enumerate(list(by_image.values())[:count])]
    return dataset.select(rows)


def digit_coverage(maps: dict[str, list[np.ndarray]], dataset: Any) -> dict[str, dict[str, float]]:
    """Per method: precision (kept tokens on a digit / kept) and recall (digit tokens kept / digit tokens).

    Every method keeps the same number of tokens, so ``chance`` is uniform selection of that many.
    """
    from fastvision.evals.digits_data import BACKGROUND_CLASS, GRID, make_scenes, patch_labels

    scenes = make_scenes("test", max(dataset["image_id"]) + 1)
    on_digit = [patch_labels(scenes[scene]).reshape(GRID, GRID) != BACKGROUND_CLASS for scene in dataset["image_id"]]
    digit_tokens = sum(int(digits.sum()) for digits in on_digit)
    tokens = len(on_digit) * GRID * GRID
    coverage, kept = {}, 0
    for method, grids in maps.items():
        kept = sum(int(grid.sum()) for grid in grids)
        hits = sum(int((grid & digits).sum()) for grid, digits in zip(grids, on_digit, strict=True))
        coverage[method] = {"precision": hits / kept, "recall": hits / digit_tokens}
    # Uniform chance keeping as many tokens: on a digit as often as digits cover the image, and each digit token kept
    # as often as any token is.
    coverage["chance"] = {"precision": digit_tokens / tokens, "recall": kept / tokens}
    return coverage


def heatmap_figure(dataset: Any, maps: dict[str, list[np.ndarray]], title: str, path: str | Path) -> Path:
    """One row per question: the image, then each method's kept map over it (dropped patches dimmed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastvision.evals.plot import save_figure

    methods = list(maps)
    count = len(dataset)
    figure, axes = plt.subplots(count, len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2.1 * count), dpi=110,
                                squeeze=False)  # fmt: skip
    for row in range(count):
        image = np.asarray(dataset[row]["image"].convert("L"), dtype=np.float32) / 255.0
        axes[row][0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[row][0].set_title(f"{dataset[row]['question']}\nanswer {dataset[row]['answer']}", fontsize=6)
        for column, method in enumerate(methods, start=1):
            grid = maps[method][row]
            scale = image.shape[0] // grid.shape[0]
            kept = np.kron(grid, np.ones((scale, scale))).astype(bool)
            shown = np.stack([np.where(kept, image, 0.25 * image + 0.05)] * 3, axis=-1)
            shown[..., 2] = np.where(kept, shown[..., 2] * 0.55, shown[..., 2])  # kept patches tinted warm
            axes[row][column].imshow(shown)
            if row == 0:
                where = "\n(before the LM)" if method in BEFORE_THE_LANGUAGE_MODEL else "\n"
                axes[row][column].set_title(f"{method}{where}", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)
