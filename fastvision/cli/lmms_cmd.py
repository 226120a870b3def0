"""``fastvision lmms-tasks``: print the folder of the package's lmms-eval tasks, for lmms-eval's ``--include_path``.

lmms-eval finds the model ``fastvision`` by its entry point, but task folders only by ``--include_path``:

    lmms-eval eval --model fastvision --model_args pretrained=...,fastv_ratio=0.5 --tasks easyvqa \\
        --include_path "$(fastvision lmms-tasks)"

``--harness lm-eval`` prints the lm-eval task folder instead, for an lm-eval that finds the model ``fastvision``
by its ``lm_eval.models`` entry point (``fastvision lm-eval`` adds that folder itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any


def lmms_tasks_folder() -> Path:
    """The package's lmms-eval task folders (``easyvqa``, ``digits``)."""
    import fastvision.evals

    return Path(fastvision.evals.__file__).parent / "lmms_tasks"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lmms-tasks",
        help="Print the folder of the offline lmms-eval tasks easyvqa and digits (for lmms-eval's --include_path).",
    )
    parser.add_argument(
        "--harness",
        choices=["lmms-eval", "lm-eval"],
        default="lmms-eval",
        help="whose task folder to print (default lmms-eval; lm-eval: its easyvqa task, for plain `lm_eval`)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.harness == "lm-eval":
        from fastvision.cli.lm_eval_cmd import tasks_folder

        print(tasks_folder())
        return 0
    if importlib.util.find_spec("lmms_eval") is None:
        print('note: lmms-eval is not installed; pip install "fastvision[lmms]" && pip install --no-deps '
              '"lmms-eval>=0.7.3,<0.8"', file=sys.stderr)  # fmt: skip
    print(lmms_tasks_folder())
    return 0
