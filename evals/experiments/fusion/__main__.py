"""``python -m evals.experiments.fusion``: early vs intermediate fusion on a small text-to-image experiment, on CPU."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from evals.experiments.command import run_reporting_errors

PROG = "python -m evals.experiments.fusion"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The intermediate-fusion experiment (arXiv 2403.16530) at CPU scale: the same small U-ViT trained "
        "with early fusion and with intermediate fusion (concat and cross), several seeds, the same steps; "
        "alignment, Fréchet distance and cost.",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (fewer steps, 2 seeds)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2)")
    parser.add_argument("--x0-weight-cap", type=float, default=None,
                        help="cap of the 1/SNR loss weight (default 20; 0 trains with the plain ε loss)")  # fmt: skip
    parser.add_argument("--x0-weight-floor", type=float, default=None,
                        help="floor of that weight (default none; 1 keeps plain ε loss at low noise)")  # fmt: skip
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("early", "concat", "cross"),
        default=None,
        help="which variants to train (default all three; the first is the cost ratios' baseline)",
    )
    parser.add_argument(
        "--pos-embed-init",
        choices=("random", "sincos"),
        default=None,
        help="start of the U-ViT's learned positional embedding (default sincos)",
    )
    parser.add_argument("--shape-radius", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="radius range of the rendered shapes in pixels (default 7 8)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None,
                        help="processes training runs side by side, one thread each (default 2)")  # fmt: skip
    parser.add_argument("--out", default="fastvision-fusion", help="output folder (results.json, plots)")
    return parser


def run(args: argparse.Namespace) -> int:
    from evals.experiments.fusion.experiment import run_fusion_experiment
    from evals.experiments.fusion.report import write_fusion_report

    settings = settings_from(args)
    started = time.perf_counter()
    results = run_fusion_experiment(settings, progress=lambda message: print(message, flush=True))
    results["duration_seconds"] = round(time.perf_counter() - started, 1)
    paths = write_fusion_report(results, args.out)
    for name, row in results["summary"].items():
        print(f"{name:28s} alignment {row['alignment_all']['mean']:.3f} ± {row['alignment_all']['std']:.3f}  "
              f"Fréchet {row['frechet_distance']['mean']:.2f}  FLOPs ×{row['flops_ratio']:.3f}  "
              f"step time ×{row['step_time_ratio']:.3f}")  # fmt: skip
    print(f"wrote {', '.join(str(path) for path in paths.values())} ({results['duration_seconds']:.0f} s)")
    return 0


def settings_from(args: argparse.Namespace) -> Any:
    """The experiment's settings from the command line, every value checked before any work starts."""
    import dataclasses

    from evals.experiments.fusion.experiment import QUICK, SHORT_NAMES, FusionRunSettings

    settings = QUICK if args.quick else FusionRunSettings()
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {args.steps}.")
        settings = dataclasses.replace(settings, steps=args.steps)
    if args.x0_weight_cap is not None:
        if args.x0_weight_cap < 0:
            raise ValueError(f"--x0-weight-cap must be >= 0, got {args.x0_weight_cap}.")
        settings = dataclasses.replace(settings, x0_weight_cap=args.x0_weight_cap or None)
    if args.x0_weight_floor is not None:
        if args.x0_weight_floor <= 0:
            raise ValueError(f"--x0-weight-floor must be > 0, got {args.x0_weight_floor}.")
        settings = dataclasses.replace(settings, x0_weight_floor=args.x0_weight_floor)
    if args.seeds is not None:
        settings = dataclasses.replace(settings, seeds=tuple(args.seeds))
    if args.variants is not None:
        settings = dataclasses.replace(settings, variants=tuple(dict.fromkeys(SHORT_NAMES[v] for v in args.variants)))
    if args.pos_embed_init is not None:
        model = dataclasses.replace(settings.model, pos_embed_init=args.pos_embed_init)
        settings = dataclasses.replace(settings, model=model)
    if args.shape_radius is not None:
        low, high = args.shape_radius
        if not 2 <= low <= high <= 12:
            raise ValueError(f"--shape-radius needs 2 <= LOW <= HIGH <= 12 pixels, got {low} {high}.")
        settings = dataclasses.replace(settings, shape_radius=(low, high))
    workers = args.workers if args.workers is not None else min(settings.workers, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}.")
    return dataclasses.replace(settings, workers=workers)


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
