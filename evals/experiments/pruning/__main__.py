"""``python -m evals.experiments.pruning``: AutoBot and FTWT channel pruning on a ResNet and a VGG trained on
scikit-learn's digits."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from evals.experiments.command import run_reporting_errors

PROG = "python -m evals.experiments.pruning"


def _share(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"must be a share strictly between 0 and 1, got {value}")
    return number


def _mass(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be an activation-mass share in (0, 1], got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a ResNet- and a VGG-style network on scikit-learn's digits, prune each with AutoBot "
        "(arXiv 2111.09635) to a share of its MACs and with FTWT (arXiv 2110.08232) at activation-mass thresholds, "
        "and write the harness's results JSON and a Pareto plot of accuracy against MACs.",
    )
    parser.add_argument("--networks", nargs="+", default=None, help="networks to prune (default: all)")
    parser.add_argument("--target", type=_share, default=None, help="AutoBot's MACs target as a share (default 0.5)")
    parser.add_argument("--thresholds", type=_mass, nargs="+", default=None, help="FTWT thresholds (0.7 0.85)")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="fastvision-prune", help="output folder (results.json, prune.png)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from evals.experiments.pruning.experiment import (
        NETWORKS,
        QUICK,
        PruneRunSettings,
        prune_plot,
        run_prune_experiment,
    )

    unknown = sorted(set(args.networks or ()) - set(NETWORKS))
    if unknown:
        raise SystemExit(f"{PROG}: unknown networks {unknown}; allowed: {', '.join(NETWORKS)}.")
    settings = QUICK if args.quick else PruneRunSettings()
    changes = {"networks": tuple(args.networks) if args.networks else None, "target": args.target,
               "thresholds": tuple(args.thresholds) if args.thresholds else None}  # fmt: skip
    settings = dataclasses.replace(settings, threads=args.threads, progress=not args.quiet,
                                   **{key: value for key, value in changes.items() if value is not None})  # fmt: skip
    results = run_prune_experiment(settings)
    out = Path(args.out)
    results.to_json(out / "results.json")
    prune_plot(results, out / "prune.png")
    table = Table(title=f"Channel pruning, {results.dataset['name']} ({results.settings[0].questions} test images)")
    for column in ("setting", "accuracy", "MACs per image", "rel. MACs", "params"):
        table.add_column(column, justify="right")
    for row in results.settings:
        params = row.config.get("params_after")
        table.add_row(row.name, f"{row.accuracy:.3f}", f"{row.prefill_flops / 2:,.0f}", f"{row.relative_flops:.3f}",
                      f"{params:,}" if params else "—")  # fmt: skip
    Console(width=110).print(table)
    print(f"wrote {out / 'results.json'} and {out / 'prune.png'} ({results.duration_seconds / 60:.1f} min)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
