"""Entry point of the ``fastvision`` command: one sub-command module per job."""

from __future__ import annotations

import argparse
import sys

from fastvision.cli import eval_cmd, flops_cmd, train_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastvision", description="Plug-in acceleration for Hugging Face VLMs.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    eval_cmd.add_parser(subparsers)
    flops_cmd.add_parser(subparsers)
    train_cmd.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, NotImplementedError, ModuleNotFoundError, FileNotFoundError) as error:
        print(f"fastvision {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
