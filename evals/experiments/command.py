"""What the studies' command lines share: one error report, argument types, and writing results with their plot."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastvision.cli.main import REPORTED_ERRORS


def run_reporting_errors(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``; a reported error is printed as ``PROG: error: MESSAGE`` and returns 2."""
    try:
        return run(args)
    except REPORTED_ERRORS as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def write_results(out: str, payload: dict[str, Any], plot: Callable[[Path], Any], plot_name: str) -> Path:
    """Write ``results.json`` and the plot into ``out`` (created); returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(folder / plot_name)
    return folder
