"""``python -m evals.experiments.towers``: small backbones swapped in as the bundled LLaVA's vision tower, trained
and swept."""

from __future__ import annotations

import argparse
from pathlib import Path

from evals.experiments.command import run_reporting_errors

PROG = "python -m evals.experiments.towers"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Swap small variants of the bundled backbones in as the vision tower of the bundled easy-VQA "
        "LLaVA, train each with the bundled recipe, and sweep FastV on easy-VQA's test split: accuracy against "
        "whole-model FLOPs, with and without FastV.",
    )
    parser.add_argument("--towers", nargs="+", default=None, help="towers to compare (default: all)")
    parser.add_argument("--steps", type=int, default=800, help="stage-2 steps per tower (default 800)")
    parser.add_argument("--vision-steps", type=int, default=300, help="stage-1 steps per tower (default 300)")
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training questions")
    parser.add_argument("--limit", type=int, default=1000, help="test questions (default 1000; 0 = all)")
    parser.add_argument("--ratio", type=float, nargs="+", default=[0.5, 0.75], help="FastV ratios (K=2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="fastvision-towers", help="output folder (results.json, towers.png)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from evals.experiments.towers.comparison import TOWERS, TowerRunSettings, run_tower_comparison, tower_plot

    unknown = sorted(set(args.towers or ()) - set(TOWERS))
    if unknown:
        raise SystemExit(f"{PROG}: unknown towers {unknown}; allowed: {', '.join(TOWERS)}.")
    settings = TowerRunSettings(
        towers=tuple(args.towers or TOWERS), steps=args.steps, vision_steps=args.vision_steps,
        train_limit=args.train_limit, limit=args.limit or None, ratios=tuple(args.ratio), seed=args.seed,
        threads=args.threads, progress=not args.quiet,
    )  # fmt: skip
    results = run_tower_comparison(settings)
    out = Path(args.out)
    results.to_json(out / "results.json")
    tower_plot(results, out / "towers.png")
    table = Table(title=f"Vision towers, easy-VQA test ({results.settings[0].questions} questions)")
    for column in ("tower", "setting", "accuracy", "GFLOPs (whole model)", "rel. FLOPs", "image tokens kept"):
        table.add_column(column, justify="right")
    for row in results.settings:
        table.add_row(row.tower, row.name.split(" ", 1)[1], f"{row.accuracy:.3f}", f"{row.prefill_flops / 1e9:.4f}",
                      f"{row.relative_flops:.3f}", f"{row.kept_image_tokens:.0f}/{row.image_tokens:.0f}")  # fmt: skip
    Console(width=110).print(table)
    print(f"wrote {out / 'results.json'} and {out / 'towers.png'} ({results.duration_seconds / 60:.1f} min)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
