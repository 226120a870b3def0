"""Entry point of the ``fastvision`` command: one sub-command module per job."""

from __future__ import annotations

import argparse
import sys

from fastvision.cli import card_cmd, demo_cmd, eval_cmd, flops_cmd, heatmap_cmd, lmms_cmd, train_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastvision", description="Plug-in acceleration for Hugging Face VLMs.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    eval_cmd.add_parser(subparsers)
    heatmap_cmd.add_parser(subparsers)
    flops_cmd.add_parser(subparsers)
    train_cmd.add_parser(subparsers)
    card_cmd.add_parser(subparsers)
    demo_cmd.add_parser(subparsers)
    lmms_cmd.add_parser(subparsers)
    subparsers.add_parser(
        "lm-eval", help="lm-eval with the fastvision model and the package's tasks (every lm-eval argument works)"
    )
    return parser


def _run_lm_eval(argv: list[str]) -> int:
    from fastvision.cli import lm_eval_cmd

    try:
        return lm_eval_cmd.run(argv)
    except (ValueError, ModuleNotFoundError) as error:
        print(f"fastvision lm-eval: error: {error}", file=sys.stderr)
        return 2


# Bad settings and missing extras are reported in one line with exit status 2 (the studies' commands reuse this).
REPORTED_ERRORS = (ValueError, NotImplementedError, ModuleNotFoundError, FileNotFoundError, ConnectionError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:  # lm-eval parses its own arguments: pass them through untouched
        return _run_lm_eval(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except REPORTED_ERRORS as error:
        print(f"fastvision {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
