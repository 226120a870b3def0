"""``python -m evals.experiments.video``: TRecViT against a full-attention ViViT on moving-shape videos."""

from __future__ import annotations

import argparse
import dataclasses

from evals.experiments.command import positive_int, run_reporting_errors, write_results

PROG = "python -m evals.experiments.video"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a small TRecViT (arXiv 2412.14294) and a ViViT of similar size on procedurally generated "
        "moving-shape clips, score them, and measure MACs and peak memory as the clips grow.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps per model (default 600)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--out", default="fastvision-video", help="output folder (results.json, video.png)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def run(args: argparse.Namespace) -> int:
    from evals.experiments.video.experiment import QUICK, VideoRunSettings, run_video_experiment, video_plot

    settings = QUICK if args.quick else VideoRunSettings()
    settings = dataclasses.replace(settings, threads=args.threads, progress=not args.quiet,
                                   steps=args.steps or settings.steps)  # fmt: skip
    results = run_video_experiment(settings)
    out = write_results(args.out, dataclasses.asdict(results), lambda path: video_plot(results, path), "video.png")
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


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
