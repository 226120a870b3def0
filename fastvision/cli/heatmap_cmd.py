"""``fastvision heatmaps``: kept-token maps of a bundled task's test images, FastV beside the baselines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fastvision.cli.eval_cmd import TASK_NAMES

METHODS = ("fastv", "dart", "divprune", "visionzip", "random", "stride", "pool")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "heatmaps",
        help="Kept-token maps (FastV vs the baselines) of a bundled task's test images, and digit coverage.",
        description="Draw which image tokens each method keeps on a few test questions (heatmaps.png) and, on the "
        "digits task, measure over --coverage questions how many kept tokens lie on digits (coverage.json).",
    )
    parser.add_argument("--task", default="digits", choices=sorted(TASK_NAMES))
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the task's bundled model)")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--images", type=int, default=4, help="test images drawn, one question each (default 4)")
    parser.add_argument("--coverage", type=int, default=400, help="questions measured for digit coverage (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fastvision-heatmaps", help="output folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastvision.cli.eval_cmd import load_model_for_eval
    from fastvision.evals.bundled_tasks import get_task
    from fastvision.evals.heatmaps import digit_coverage, heatmap_figure, kept_maps, spread_rows

    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        what = f"unknown {unknown}" if unknown else "none given"
        raise ValueError(f"--methods {args.methods!r}: {what}; allowed: {', '.join(METHODS)}.")
    if args.images < 1 or args.coverage < 0:
        raise ValueError(f"--images must be >= 1 and --coverage >= 0, got {args.images} and {args.coverage}.")
    import fastvision

    fastvision.FastVConfig(k=args.k, ratio=args.ratio)  # validates k and ratio before any work
    task = get_task(args.task)
    model, processor, source = load_model_for_eval(args.model, task)
    layers = model.config.get_text_config().num_hidden_layers
    if args.k >= layers:
        raise ValueError(f"--k {args.k} is out of range for this model: allowed is 1 <= k < {layers}.")
    shown = spread_rows(task.load("test", args.images * 8), args.images)
    maps = kept_maps(model, processor, shown, args.k, args.ratio, methods, args.seed)
    out = Path(args.out)
    title = f"{Path(source).name} on {task.name}: kept image tokens at K={args.k}, R={args.ratio:g}"
    figure = heatmap_figure(shown, maps, title, out / "heatmaps.png")
    print(f"wrote {figure}")
    if task.name == "digits" and args.coverage:
        measured = task.load("test", args.coverage)
        coverage = digit_coverage(kept_maps(model, processor, measured, args.k, args.ratio, methods, args.seed),
                                  measured)  # fmt: skip
        record = {"model": source, "task": task.name, "k": args.k, "ratio": args.ratio, "questions": len(measured),
                  "coverage": coverage}  # fmt: skip
        path = out / "coverage.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        for method, values in coverage.items():
            print(f"{method:>7}: {values['precision']:.3f} of kept tokens on a digit, "
                  f"{values['recall']:.3f} of digit tokens kept")  # fmt: skip
        print(f"wrote {path}")
    return 0
