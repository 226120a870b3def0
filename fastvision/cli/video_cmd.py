"""``fastvision eval-video`` (TRecViT vs ViViT on moving shapes) and ``fastvision eval-seizure`` (VSViG on synthetic
skeleton recordings): the small real experiments behind the video and skeleton backbones."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _common_arguments(parser: argparse.ArgumentParser, steps_help: str, out: str, plot: str) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    parser.add_argument("--steps", type=_positive, default=None, help=steps_help)
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--out", default=out, help=f"output folder (results.json, {plot})")
    parser.add_argument("--quiet", action="store_true")


def add_parser(subparsers: Any) -> None:
    video = subparsers.add_parser(
        "eval-video",
        help="TRecViT vs a full-attention ViViT on moving-shape videos: accuracy, MACs and peak memory vs clip length.",
        description="Train a small TRecViT (arXiv 2412.14294) and a ViViT of similar size on procedurally generated "
        "moving-shape clips, score them, and measure MACs and peak memory as the clips grow.",
    )
    _common_arguments(video, "training steps per model (default 600)", "fastvision-video", "video.png")
    video.set_defaults(run=run_video)

    seizure = subparsers.add_parser(
        "eval-seizure",
        help="VSViG on synthetic skeleton recordings: clip accuracy, detection latency and false alarms.",
        description="Train VSViG-Light (arXiv 2311.14775) on synthetic skeleton-patch recordings with seizure onsets, "
        "then stream held-out recordings through it and the decision rule.",
    )
    _common_arguments(seizure, "training steps (default 300)", "fastvision-seizure", "seizure.png")
    seizure.set_defaults(run=run_seizure)


def run_video(args: argparse.Namespace) -> int:
    from fastvision.evals.video_experiment import QUICK, VideoRunSettings, run_video_experiment, video_plot

    settings = QUICK if args.quick else VideoRunSettings()
    settings = dataclasses.replace(settings, threads=args.threads, progress=not args.quiet,
                                   steps=args.steps or settings.steps)  # fmt: skip
    results = run_video_experiment(settings)
    out = _write_results(args.out, dataclasses.asdict(results), lambda path: video_plot(results, path), "video.png")
    for name, value in results.accuracy.items():
        print(f"{name:8s} {results.parameters[name]:>9,} parameters  test accuracy {value:.3f}")
    print(f"{'frames':>6} {'model':>8} {'GMACs':>8} {'train MiB':>10} {'infer MiB':>10} {'stream MiB':>10} "
          f"{'math-attention train / infer MiB':>33}")  # fmt: skip
    for row in results.scaling:
        stream = f"{row['stream_peak_mib']:10.2f}" if "stream_peak_mib" in row else f"{'—':>10}"
        math = row.get("train_peak_mib_math_attention")
        math = f"{math:.2f} / {row['inference_peak_mib_math_attention']:.2f}" if math is not None else "—"
        print(f"{row['frames']:>6} {row['model']:>8} {row['macs_per_clip'] / 1e9:8.3f} {row['train_peak_mib']:10.2f} "
              f"{row['inference_peak_mib']:10.2f} {stream} {math:>33}")  # fmt: skip
    print(f"wrote {out / 'results.json'} and {out / 'video.png'} ({results.duration_seconds / 60:.1f} min)")
    return 0


def run_seizure(args: argparse.Namespace) -> int:
    from fastvision.evals.seizure_experiment import QUICK, SeizureRunSettings, run_seizure_experiment, seizure_plot

    settings = QUICK if args.quick else SeizureRunSettings()
    settings = dataclasses.replace(settings, threads=args.threads, progress=not args.quiet,
                                   steps=args.steps or settings.steps)  # fmt: skip
    results = run_seizure_experiment(settings)
    out = _write_results(args.out, results, lambda path: seizure_plot(results, path), "seizure.png")
    detection = results["detection"]
    print(f"clip accuracy {results['clip_accuracy']:.3f}; detected {detection['detected']}/{detection['seizures']} "
          f"seizures, median latency {detection['median_latency_s']} s, {detection['false_alarms']} false alarms in "
          f"{detection['hours_monitored'] * 60:.1f} min of seizure-free monitoring")  # fmt: skip
    print(f"wrote {out / 'results.json'} and {out / 'seizure.png'} ({results['duration_seconds'] / 60:.1f} min)")
    return 0


def _write_results(out: str, payload: dict[str, Any], plot: Callable[[Path], Any], plot_name: str) -> Path:
    """Write ``results.json`` and the plot into ``out`` (created); returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(folder / plot_name)
    return folder
