"""``python -m evals.experiments.video``: TRecViT against a full-attention ViViT on procedurally generated
moving-shape videos.

Two measurements (TRecViT: Pătrăucean et al., arXiv 2412.14294; ViViT: Arnab et al., arXiv 2103.15691):

1. **Does it learn?** A small TRecViT and a ViViT of similar size train for the same steps on 8-frame clips whose
   class only motion shows (``moving_shapes.py``), and are scored on held-out clips. TRecViT's causal per-frame
   predictions also show how its accuracy grows with the frames it has seen.
2. **What does it cost as clips grow?** For 8 to 128 frames: MACs per clip (counted), and the peak memory of a
   training step, of a whole-clip inference, and (TRecViT) of streaming the clip frame by frame, counted tensor by
   tensor (``fastvision.evals.benchmarks.peak_memory``). ViViT is measured twice: with torch's default SDPA kernel,
   which on a CPU never materialises the (T·N)² attention matrix, and with the plain "math" kernel, which does (as
   attention did when the papers were written).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from evals.experiments.video.moving_shapes import ACTIONS, FRAME_SIZE, make_videos
from evals.experiments.video.vivit_baseline import ViViT
from fastvision.backbones.trecvit import TRecViT, TRecViTConfig
from fastvision.pruning.common import accuracy

SMALL_TRECVIT = TRecViTConfig(width=64, depth=3, num_heads=4, mlp_dim=128, img_size=FRAME_SIZE, patch_size=8,
                              num_frames=8, rep_size=128)  # fmt: skip
SMALL_VIVIT = {"width": 64, "depth": 6, "num_heads": 4, "mlp_dim": 128, "img_size": FRAME_SIZE, "patch_size": 8}
MODELS = ("trecvit", "vivit")


def build_video_model(name: str, frames: int = 8) -> nn.Module:
    """The experiment's small models: TRecViT (3 layers) and a ViViT of similar size (6 joint-attention layers)."""
    if name == "trecvit":
        return TRecViT(SMALL_TRECVIT, num_classes=len(ACTIONS), num_frames=frames)
    if name == "vivit":
        return ViViT(**SMALL_VIVIT, num_classes=len(ACTIONS), max_frames=max(frames, 8))
    raise ValueError(f"unknown video model {name!r}; choose from {MODELS}")


@dataclass(frozen=True)
class VideoRunSettings:
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-3
    frames: int = 8
    train_clips: int = 6000
    test_clips: int = 1200
    seed: int = 0
    scaling_frames: tuple[int, ...] = (8, 16, 32, 64, 128)
    memory_batch: int = 4
    threads: int = 2
    progress: bool = True


QUICK = VideoRunSettings(steps=10, batch_size=8, train_clips=64, test_clips=32, scaling_frames=(4, 8), memory_batch=2)


@dataclass
class VideoResults:
    settings: dict[str, Any]
    parameters: dict[str, int]
    accuracy: dict[str, float]
    final_loss: dict[str, float]
    train_seconds: dict[str, float]
    stream_accuracy_by_frame: list[float]
    scaling: list[dict[str, Any]] = field(default_factory=list)
    duration_seconds: float = 0.0
    schema: str = "fastvision.video/1"


def _progress(enabled: bool, total: int, description: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False)


def train_model(model: nn.Module, settings: VideoRunSettings, train: Any) -> float:
    """AdamW with a linear warm-up then cosine decay; returns the mean loss of the last 20 steps."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.05)
    warmup = max(1, settings.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup)
        * 0.5 * (1 + torch.cos(torch.tensor(step / settings.steps * torch.pi)).item()),
    )  # fmt: skip
    model.train()
    losses = []
    with _progress(settings.progress, settings.steps, type(model).__name__) as bar:
        for _ in range(settings.steps):
            chosen = torch.randint(0, len(train), (settings.batch_size,), generator=generator)
            loss = F.cross_entropy(model(train.videos[chosen]), train.labels[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return sum(losses[-20:]) / len(losses[-20:])


@torch.no_grad()
def stream_accuracy(model: TRecViT, test: Any, batch_size: int = 128) -> list[float]:
    """Accuracy of TRecViT's causal prediction after each frame (what a live stream would show)."""
    model.eval()
    correct = torch.zeros(test.videos.shape[1])
    for i in range(0, len(test), batch_size):
        per_frame = model.forward_frames(test.videos[i : i + batch_size]).argmax(-1)
        correct += (per_frame == test.labels[i : i + batch_size, None]).sum(0)
    return (correct / len(test)).tolist()


def count_macs(name: str, frames: int) -> int:
    from fastvision.flops.counter import measure_flops

    with torch.device("meta"), torch.no_grad():
        model = build_video_model(name, frames).eval()
        report, _ = measure_flops(lambda: model(torch.empty(1, frames, 3, FRAME_SIZE, FRAME_SIZE)))
    return report.macs


def scaling_rows(settings: VideoRunSettings) -> list[dict[str, Any]]:
    """MACs per clip and peak memory per step for each clip length and model."""
    from fastvision.evals.benchmarks.peak_memory import peak_memory_mib

    rows = []
    jobs = [(name, frames) for frames in settings.scaling_frames for name in MODELS]
    with _progress(settings.progress, len(jobs), "scaling") as bar:
        for name, frames in jobs:
            torch.manual_seed(settings.seed)
            model = build_video_model(name, frames)
            video = torch.rand(settings.memory_batch, frames, 3, FRAME_SIZE, FRAME_SIZE)
            modes = ("train", "inference", "stream") if name == "trecvit" else ("train", "inference")
            row: dict[str, Any] = {"model": name, "frames": frames, "macs_per_clip": count_macs(name, frames)}
            for mode in modes:
                row[f"{mode}_peak_mib"] = round(peak_memory_mib(model, video, mode), 3)
            if name == "vivit":  # the same model when attention is materialised (no memory-efficient SDPA kernel)
                with sdpa_kernel(SDPBackend.MATH):
                    for mode in ("train", "inference"):
                        row[f"{mode}_peak_mib_math_attention"] = round(peak_memory_mib(model, video, mode), 3)
            rows.append(row)
            bar.update(1)
    return rows


def run_video_experiment(settings: VideoRunSettings) -> VideoResults:
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    train = make_videos(settings.train_clips, settings.frames, seed=settings.seed + 1)
    test = make_videos(settings.test_clips, settings.frames, seed=settings.seed + 2)
    parameters, accuracies, losses, seconds, by_frame = {}, {}, {}, {}, []
    for name in MODELS:
        torch.manual_seed(settings.seed)
        model = build_video_model(name, settings.frames)
        parameters[name] = sum(p.numel() for p in model.parameters())
        began = time.perf_counter()
        losses[name] = train_model(model, settings, train)
        seconds[name] = round(time.perf_counter() - began, 1)
        accuracies[name] = accuracy(model, test.videos, test.labels)
        if name == "trecvit":
            by_frame = stream_accuracy(model, test)
    return VideoResults(
        settings={**asdict(settings), "scaling_frames": list(settings.scaling_frames)},
        parameters=parameters, accuracy=accuracies, final_loss=losses, train_seconds=seconds,
        stream_accuracy_by_frame=by_frame, scaling=scaling_rows(settings),
        duration_seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip


def video_plot(results: VideoResults, path: str | Path) -> Path:
    """Three panels: MACs per clip, peak training memory and peak inference memory, against the clip length."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    from fastvision.evals.plot import save_figure

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    styles = {"trecvit": ("TRecViT", "tab:blue"), "vivit": ("ViViT (joint attention)", "tab:orange")}
    for name, (label, color) in styles.items():
        rows = [row for row in results.scaling if row["model"] == name]
        frames = [row["frames"] for row in rows]
        axes[0].plot(frames, [row["macs_per_clip"] / 1e9 for row in rows], "o-", color=color, label=label)
        axes[1].plot(frames, [row["train_peak_mib"] for row in rows], "o-", color=color, label=label)
        axes[2].plot(frames, [row["inference_peak_mib"] for row in rows], "o-", color=color, label=f"{label}, clip")
        if name == "trecvit":
            axes[2].plot(frames, [row["stream_peak_mib"] for row in rows], "s--", color=color,
                         label="TRecViT, streamed")  # fmt: skip
        else:
            for axis, key in ((axes[1], "train"), (axes[2], "inference")):
                axis.plot(frames, [row[f"{key}_peak_mib_math_attention"] for row in rows], "^:", color=color,
                          label="ViViT, attention materialised")  # fmt: skip
    batch = results.settings["memory_batch"]
    titles = ("GMACs per clip", f"peak memory, training step (MiB, batch {batch})",
              f"peak memory, inference (MiB, batch {batch})")  # fmt: skip
    for axis, title in zip(axes, titles, strict=True):
        axis.set(xscale="log", yscale="log", xlabel="frames per clip", title=title)
        axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_xticks(results.settings["scaling_frames"], [str(f) for f in results.settings["scaling_frames"]])
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    accuracy_text = ", ".join(f"{styles[name][0]} {value:.3f}" for name, value in results.accuracy.items())
    figure.suptitle(f"Moving shapes, {results.settings['frames']}-frame test accuracy: {accuracy_text}", fontsize=10)
    return save_figure(figure, path)
