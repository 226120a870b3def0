"""``fastvision card RESULTS.json``: a Hub model card from a ``fastvision eval`` or an lm-eval results file."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "card",
        help="Write a Hub model card (README.md) from a fastvision eval or fastvision lm-eval results JSON.",
        description="Build README.md with YAML metadata (base_model, tags, pipeline_tag, the fastvision config, "
        "model-index eval results) plus the results table, the Pareto plot and how to reproduce them.",
    )
    parser.add_argument("results", help="results.json of `fastvision eval`, or an lm-eval results_*.json")
    parser.add_argument("--base-model", default=None, help="Hub id of the model the card is about (base_model)")
    parser.add_argument("--name", default=None, help="the card's model name (default: derived from the results)")
    parser.add_argument("--out", default="fastvision-card", help="output folder (README.md, pareto.png)")
    parser.add_argument("--push", default=None, metavar="REPO_ID", help="also upload the folder to this Hub repo")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastvision.evals.card_sources import load_card_source
    from fastvision.evals.model_card import push_card, write_card

    source = load_card_source(args.results)
    path = write_card(source, args.out, base_model=args.base_model, name=args.name)
    print(f"wrote {path}")
    if args.push:
        print(f"pushed to {push_card(path.parent, args.push)}")
    return 0
