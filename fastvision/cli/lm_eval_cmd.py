"""``fastvision lm-eval ...``: lm-eval's own command line with the ``fastvision`` model and the package's tasks.

lm-eval 0.4 has no plugin entry points, so this registers the model (by importing it), adds ``evals/tasks`` to the
task include path (next to any ``--include_path`` given) and hands every other argument to lm-eval unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def tasks_folder() -> Path:
    """The package's lm-eval task YAMLs (``easyvqa``)."""
    import fastvision.evals

    return Path(fastvision.evals.__file__).parent / "tasks"


def parse_arguments(argv: list[str]) -> tuple[Any, argparse.Namespace]:
    """lm-eval's parser and its parse of ``argv``, with the package's task folder first on the include path."""
    from lm_eval._cli import HarnessCLI

    saved = sys.argv
    sys.argv = ["fastvision lm-eval", *argv]
    try:
        cli = HarnessCLI()
        args = cli.parse_args()
    finally:
        sys.argv = saved
    if hasattr(args, "include_path"):
        given = args.include_path
        args.include_path = [str(tasks_folder()), *([given] if given else [])]
    return cli, args


def run(argv: list[str]) -> int:
    try:
        import fastvision.evals.lm_eval_model  # noqa: F401  (registers the "fastvision" model)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"{error}; install the eval extra: pip install 'fastvision[eval]'.") from error
    from lm_eval.utils import setup_logging

    setup_logging()
    cli, args = parse_arguments(argv)
    cli.execute(args)
    return 0
