"""Vision towers compared inside the bundled LLaVA (issue #8): each small backbone is swapped in as the tower, trained
by the bundled recipe (``fit_llava``: the same stages, steps and data), and swept like ``fastvision eval``.

Every tower sees 64x64 easy-VQA images (their native size) and gives 64 image tokens from a stride-8 feature map, so
the language model's share of the FLOPs is the same and the towers differ only in what they compute. The rows go into
the harness's results JSON (``tower`` names the tower, FLOPs are of the whole model: tower, projector and language
model) and one plot of accuracy against prefill GFLOPs.

    python -m evals.experiments.towers --out evals/experiments/towers/results
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

IMAGE_SIZE = 64


def _cvt() -> nn.Module:  # transformers indexes stage i's drop-path list by i: stage i needs depth > i
    from fastvision.backbones.cvt import CvT

    return CvT((1, 2, 3), num_classes=0, img_size=IMAGE_SIZE, embed_dim=[32, 64, 96], num_heads=[1, 2, 3],
               patch_sizes=[7, 3, 3], patch_stride=[4, 2, 1], patch_padding=[2, 1, 1],
               drop_path_rate=[0.0, 0.0, 0.0])  # fmt: skip


def _repmlpnet() -> nn.Module:
    from fastvision.backbones.repmlpnet import RepMLPNet

    return RepMLPNet((32, 96), (1, 2), (1, 4), img_size=IMAGE_SIZE, num_classes=0)


def _vheat() -> nn.Module:
    from fastvision.backbones.vheat import VHeat

    return VHeat((1, 2), 48, img_size=IMAGE_SIZE, num_classes=0)


def _turbovit() -> nn.Module:
    from fastvision.backbones.turbovit import TurboViT

    return TurboViT(48, depths=(1, 2), heads=(1, 2), mask_units=(8, 0), img_size=IMAGE_SIZE, num_classes=0)


# name -> the small variant (None: the bundled CLIP tower at 64 px with 8x8 patches), and its stride-8 stage
TOWERS: dict[str, tuple[Callable[[], nn.Module] | None, int]] = {
    "clip": (None, -1),
    "cvt": (_cvt, -1),
    "repmlpnet": (_repmlpnet, -1),
    "vheat": (_vheat, -1),
    "turbovit": (_turbovit, -1),
}


@dataclass
class TowerRunSettings:
    towers: tuple[str, ...] = tuple(TOWERS)
    steps: int = 800
    vision_steps: int = 300
    batch_size: int = 48
    learning_rate: float = 2e-3
    train_limit: int | None = None
    limit: int | None = 1000
    ratios: tuple[float, ...] = (0.5, 0.75)
    k: int = 2
    seed: int = 0
    threads: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [name for name in self.towers if name not in TOWERS]
        if unknown:
            raise ValueError(f"unknown tower(s) {unknown}; choose from {list(TOWERS)}")
        if self.steps < 1 or self.vision_steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 1, vision_steps >= 0 and batch_size >= 1; got {self.steps}, "
                             f"{self.vision_steps}, {self.batch_size}")  # fmt: skip
        bad = [ratio for ratio in self.ratios if not 0 <= ratio < 1]
        if bad:
            raise ValueError(f"ratios must lie in [0, 1); got {bad}")


def build_tower_llava(name: str, seed: int) -> tuple[Any, Any]:
    """The bundled architecture with ``name``'s tower and a processor that feeds it, freshly initialised."""
    from fastvision.backbones.vlm import swap_processor, swap_vision_tower
    from fastvision.bundled.build import build_model, build_processor, build_tokenizer
    from fastvision.bundled.train import _vocabulary

    factory, stage = TOWERS[name]
    tokenizer = build_tokenizer(_vocabulary())
    processor = build_processor(tokenizer, image_size=IMAGE_SIZE, patch_size=8)
    model = build_model(tokenizer, seed=seed, image_size=IMAGE_SIZE, patch_size=8)
    if factory is None:
        return model, processor
    torch.manual_seed(seed)
    swap_vision_tower(model, factory(), stage=stage)
    model.config.fastvision_vision_tower["backbone"] = name
    return model, swap_processor(processor, model)


def run_tower_comparison(settings: TowerRunSettings) -> Any:
    """Train and sweep every tower; returns the harness's ``EvalResults`` (rows carry ``tower``)."""
    from fastvision.bundled.train import FitSettings, fit_llava
    from fastvision.evals.data import load_easyvqa
    from fastvision.evals.results import EvalResults, environment
    from fastvision.evals.sweep import run_sweep, sweep_settings

    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    train = load_easyvqa("train", limit=settings.train_limit)
    test = load_easyvqa("test", limit=settings.limit)
    fit = FitSettings(settings.seed, settings.steps, settings.vision_steps, settings.batch_size,
                      settings.learning_rate, settings.progress)  # fmt: skip
    rows, training = [], {}
    for name in settings.towers:  # build_tower_llava seeds the model's initialisation itself
        model, processor = build_tower_llava(name, settings.seed)
        tower_started = time.perf_counter()
        if settings.progress:
            print(f"[{name}] training: tower {sum(p.numel() for p in model.model.vision_tower.parameters()):,} "
                  f"parameters", flush=True)  # fmt: skip
        stats = fit_llava(model, processor, train, fit)
        tower_parameters = sum(p.numel() for p in model.model.vision_tower.parameters())
        seconds = round(time.perf_counter() - tower_started, 1)
        training[name] = {**stats, "train_seconds": seconds, "tower_parameters": tower_parameters}
        sweep = sweep_settings([settings.k], list(settings.ratios), random_baseline=False)
        for row in run_sweep(model, processor, test, sweep, progress=settings.progress):
            row.tower = name
            row.name = f"{name} {row.name}"
            rows.append(row)
    return EvalResults(
        model="bundled easy-VQA LLaVA, vision towers swapped (python -m evals.experiments.towers)",
        dataset={
            "name": "easy-vqa",
            "split": "test",
            "questions": len(test),
            "training": training,
            "recipe": {k: v for k, v in vars(settings).items() if k != "progress"},
        },
        settings=rows,
        seed=settings.seed,
        duration_seconds=round(time.perf_counter() - started, 1),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=environment(),
    )


def tower_plot(results: Any, path: str | Path) -> Path:
    """Accuracy against prefill GFLOPs of the whole model: one line per tower (unpatched, then FastV ratios)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastvision.evals.plot import save_figure

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    towers: dict[str, list[Any]] = {}
    for row in results.settings:
        towers.setdefault(row.tower, []).append(row)
    for name, rows in towers.items():
        rows = sorted(rows, key=lambda row: row.prefill_flops)
        line = axes.plot([r.prefill_flops / 1e9 for r in rows], [r.accuracy for r in rows], marker="o", label=name)
        unpatched = next(r for r in rows if r.method == "unpatched")
        axes.plot([unpatched.prefill_flops / 1e9], [unpatched.accuracy], marker="*", markersize=13,
                  color=line[0].get_color(), linestyle="none")  # fmt: skip
    axes.set_xlabel("prefill GFLOPs of the whole model (tower + projector + LM), one question")
    axes.set_ylabel("exact-match accuracy")
    questions = results.settings[0].questions
    axes.set_title(f"Vision towers in the bundled LLaVA, easy-VQA ({questions} questions); ★ unpruned, ● FastV")
    axes.title.set_fontsize(9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)
