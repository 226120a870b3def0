"""``fastvision train-bundled``: reproduce a bundled checkpoint (seeded, CPU): easy-VQA's or the digits task's."""

from __future__ import annotations

import argparse
import json
from typing import Any

TASKS = ("easyvqa", "digits")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train-bundled",
        help="Train a bundled LLaVA from scratch (seeded; 30-45 minutes on 2 CPU cores).",
        description="Train the bundled LLaVA of a task (easy-VQA by default, or --task digits) on its train split "
        "and save it with save_pretrained. Step and batch defaults are the task's own recipe.",
    )
    parser.add_argument("--task", default="easyvqa", choices=TASKS)
    parser.add_argument("--out", default=None, help="output folder (default: the task's bundled location)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="projector + language model steps (stage 2)")
    parser.add_argument("--vision-steps", type=int, default=None, help="vision pre-training steps (stage 1)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="easyvqa: use only the first N training questions; digits: N training scenes")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastvision.bundled import BUNDLED_DIGITS_MODEL, BUNDLED_MODEL
    from fastvision.bundled.train import FitSettings, train_bundled
    from fastvision.bundled.train_digits import DIGITS_SETTINGS, train_digits

    defaults = DIGITS_SETTINGS if args.task == "digits" else FitSettings()
    options = {
        "seed": args.seed,
        "steps": defaults.steps if args.steps is None else args.steps,
        "vision_steps": defaults.vision_steps if args.vision_steps is None else args.vision_steps,
        "batch_size": defaults.batch_size if args.batch_size is None else args.batch_size,
        "learning_rate": defaults.learning_rate if args.learning_rate is None else args.learning_rate,
        "threads": args.threads,
    }
    if options["steps"] < 1 or options["batch_size"] < 1:
        raise ValueError(
            f"--steps and --batch-size must be positive, got {options['steps']} and {options['batch_size']}."
        )
    if args.train_limit is not None and args.train_limit < 1:
        raise ValueError(f"--train-limit must be positive, got {args.train_limit}.")
    if args.task == "digits":
        record = train_digits(args.out or BUNDLED_DIGITS_MODEL, train_scenes=args.train_limit, **options)
    else:
        record = train_bundled(args.out or BUNDLED_MODEL, train_limit=args.train_limit, **options)
    print(json.dumps(record, indent=2))
    return 0
