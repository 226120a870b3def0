"""``python -m evals.experiments.pruning``: AutoBot and FTWT against the unpruned network on scikit-learn's digits
(1,797 real 8x8 scans).

For a ResNet-style and a VGG-style network (``fastvision.pruning.models``): train the baseline; prune it with
AutoBot (arXiv 2111.09635) to a share of its MACs, physically, and fine-tune; and train FTWT (arXiv 2110.08232) mask
predictors at one or more activation-mass thresholds. Every row is scored on the same held-out digits and written in
the harness's results JSON (``prefill_flops`` holds 2 x the MACs per image, the mean over the test images for
FTWT's per-input masks), with a Pareto plot of accuracy against MACs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastvision.pruning.autobot import AutoBotSettings, autobot
from fastvision.pruning.common import accuracy, fine_tune
from fastvision.pruning.ftwt import FTWTSettings, ftwt
from fastvision.pruning.models import SmallResNet, SmallVGG

NETWORKS = {"resnet": SmallResNet, "vgg": SmallVGG}


@dataclass(frozen=True)
class PruneRunSettings:
    networks: tuple[str, ...] = ("resnet", "vgg")
    target: float = 0.5  # AutoBot's MACs target, as a share of the unpruned network's
    thresholds: tuple[float, ...] = (0.7, 0.85)  # FTWT activation-mass thresholds
    train_steps: int = 400
    gate_steps: int = 200
    finetune_steps: int = 300
    ftwt_steps: int = 300
    test_size: int = 497
    seed: int = 0
    threads: int = 2
    progress: bool = True


QUICK = PruneRunSettings(networks=("vgg",), thresholds=(0.7,), train_steps=20, gate_steps=10, finetune_steps=10,
                         ftwt_steps=10)  # fmt: skip


def load_digits_split(test_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits as (N, 1, 8, 8) floats in [0, 1], split once by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    test, train = order[:test_size], order[test_size:]
    return images[train], labels[train], images[test], labels[test]


def _latency_ms(model: nn.Module, images: torch.Tensor, repeats: int = 5) -> float:
    with torch.no_grad():
        model(images[:64])
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(images[:64])
            times.append((time.perf_counter() - started) * 1000 / 64)
    return sorted(times)[len(times) // 2]


def _row(name: str, method: str, config: dict[str, Any] | None, model: nn.Module, test: tuple, macs: float,
         full: float) -> Any:  # fmt: skip
    from fastvision.evals.results import SettingResult

    score = accuracy(model, *test)
    return SettingResult(
        name=name, method=method, config=config, accuracy=score, correct=round(score * len(test[1])),
        questions=len(test[1]), prefill_flops=2 * macs, relative_flops=macs / full,
        latency_ms=round(_latency_ms(model, test[0]), 4), image_tokens=0, kept_image_tokens=0,
    )  # fmt: skip


def run_prune_experiment(settings: PruneRunSettings) -> Any:
    from fastvision.evals.results import EvalResults, environment
    from fastvision.flops.counter import measure_flops

    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    train_x, train_y, test_x, test_y = load_digits_split(settings.test_size, settings.seed)
    test, rows = (test_x, test_y), []
    for network in settings.networks:
        torch.manual_seed(settings.seed)
        model = NETWORKS[network]()
        generator = torch.Generator().manual_seed(settings.seed)
        fine_tune(model, train_x, train_y, settings.train_steps, 3e-3, 64, generator, settings.progress,
                  f"{network} baseline")  # fmt: skip
        with torch.no_grad():
            full = float(measure_flops(lambda model=model: model(test_x[:1]))[0].macs)
        rows.append(_row(f"{network} unpruned", "unpatched", {"network": network}, model, test, full, full))
        bot = autobot(model, settings.target * full, (train_x, train_y), AutoBotSettings(
            gate_steps=settings.gate_steps, finetune_steps=settings.finetune_steps, seed=settings.seed,
            progress=settings.progress))  # fmt: skip
        config = {"network": network, "target_share": settings.target, "threshold": bot.threshold,
                  "params_before": bot.params_before, "params_after": bot.params_after}  # fmt: skip
        rows.append(_row(f"{network} AutoBot {settings.target:.0%}", "autobot", config, bot.model, test,
                         bot.macs_after, full))  # fmt: skip
        for threshold in settings.thresholds:
            masked = ftwt(model, threshold, (train_x, train_y), FTWTSettings(
                steps=settings.ftwt_steps, seed=settings.seed, progress=settings.progress))  # fmt: skip
            per_sample = masked.macs_per_sample(test_x)
            config = {"network": network, "threshold": threshold, "masked_layers": len(masked.layers),
                      "macs_min": float(per_sample.min()), "macs_max": float(per_sample.max())}  # fmt: skip
            rows.append(_row(f"{network} FTWT r={threshold}", "ftwt", config, masked, test,
                             float(per_sample.mean()), full))  # fmt: skip
    return EvalResults(
        model="digits CNNs (fastvision.pruning.models), pruned by python -m evals.experiments.pruning",
        dataset={"name": "scikit-learn digits", "split": f"{len(train_y)} train / {len(test_y)} test"},
        settings=rows,
        seed=settings.seed,
        duration_seconds=round(time.perf_counter() - started, 1),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        environment=environment(),
    )


def prune_plot(results: Any, path: str | Path) -> Path:
    """Accuracy against MACs relative to each unpruned network: one colour per network, one marker per method."""
    import matplotlib.pyplot as plt

    from fastvision.evals.plot import save_figure

    figure, axis = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = {"unpatched": ("*", "unpruned"), "autobot": ("s", "AutoBot"), "ftwt": ("o", "FTWT (mean per image)")}
    colors = {"resnet": "tab:blue", "vgg": "tab:orange"}
    labelled = set()
    for row in results.settings:
        network = row.config["network"]
        marker, label = markers[row.method]
        label = f"{network}: {label}" if (network, row.method) not in labelled else None
        labelled.add((network, row.method))
        axis.plot(row.relative_flops, row.accuracy, marker=marker, markersize=12 if marker == "*" else 8,
                  color=colors.get(network, "gray"), linestyle="none", label=label)  # fmt: skip
        if row.method == "ftwt":
            axis.annotate(f"r={row.config['threshold']}", (row.relative_flops, row.accuracy), fontsize=7,
                          xytext=(4, -10), textcoords="offset points")  # fmt: skip
    title = f"Channel pruning on {results.dataset['name']} ({results.settings[0].questions} test images)"
    axis.set(xlabel="MACs relative to the unpruned network", ylabel="test accuracy", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return save_figure(figure, path)
