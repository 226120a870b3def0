"""The files of ``python -m evals.experiments.fusion``: results JSON, a results plot and a grid of samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_fusion_report(results: dict[str, Any], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "plot": out / "fusion.png", "samples": out / "samples.png"}
    public = {key: value for key, value in results.items() if not key.startswith("_")}
    paths["json"].write_text(json.dumps(public, indent=2) + "\n")
    _plot(public, paths["plot"])
    _grid(results["_samples"], results["_prompts"], paths["samples"])
    return paths


def _plot(results: dict[str, Any], path: Path) -> None:
    """Alignment (all three attributes right) and Fréchet distance per variant, seed mean with min-max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["summary"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for axes, key, title in ((left, "alignment_all", "alignment: all 3 attributes right ↑"),
                             (right, "frechet_distance", "Fréchet distance to real renders ↓")):  # fmt: skip
        means = [results["summary"][name][key]["mean"] for name in names]
        values = [results["summary"][name][key]["values"] for name in names]
        pairs = list(zip(means, values, strict=True))
        errors = np.array([[m - min(v) for m, v in pairs], [max(v) - m for m, v in pairs]])
        axes.bar(range(len(names)), means, yerr=errors, capsize=4, color=["#888888", "#4c72b0", "#dd8452"])
        for index, seed_values in enumerate(values):
            axes.scatter([index] * len(seed_values), seed_values, color="black", s=10, zorder=3)
        axes.set_xticks(range(len(names)), [name.replace(" c1", "\nc1") for name in names], fontsize=8)
        axes.set_title(title, fontsize=10)
    right.axhline(results["real_vs_real_frechet_distance"], color="green", linestyle="--", label="real vs real")
    right.legend(fontsize=8)
    seeds = len(results["settings"]["seeds"])
    figure.suptitle(f"{results['settings']['steps']} training steps, {seeds} seeds (dots), same budget", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _grid(samples: dict[str, torch.Tensor], prompts: Any, path: Path, columns: int = 8) -> None:
    """One row of real renders, then one row of seed-0 samples per variant, for the same first captions."""
    from PIL import Image, ImageDraw

    rows = [("real", prompts.images[:columns])] + [(name, images[:columns]) for name, images in samples.items()]
    scale, label = 3, 150
    cell = 32 * scale
    canvas = Image.new("RGB", (label + columns * cell, len(rows) * (cell + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, (name, images) in enumerate(rows):
        top = row * (cell + 4)
        draw.text((4, top + cell // 2 - 6), name.replace("intermediate ", "interm. "), fill=(0, 0, 0))
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        for column, picture in enumerate(pixels):
            tile = Image.fromarray(picture).resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (label + column * cell, top))
    canvas.save(path)
