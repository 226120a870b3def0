"""``fastvision train-bundled``: reproduce the bundled easy-VQA LLaVA checkpoint (seeded, CPU)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    from fastvision.bundled import BUNDLED_MODEL

    parser = subparsers.add_parser(
        "train-bundled",
        help="Train the bundled easy-VQA LLaVA from scratch (seeded; about 35 minutes on 2 CPU cores).",
        description="Train the bundled LLaVA on easy-VQA's train split and save it with save_pretrained.",
    )
    parser.add_argument("--out", default=str(BUNDLED_MODEL), help="output folder (default: the bundled location)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000, help="projector + language model steps (stage 2)")
    parser.add_argument("--vision-steps", type=int, default=800, help="vision pre-training steps (stage 1)")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training questions")
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastvision.bundled.train import train_bundled

    if args.steps < 1 or args.batch_size < 1:
        raise ValueError(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}.")
    record = train_bundled(
        args.out,
        seed=args.seed,
        steps=args.steps,
        vision_steps=args.vision_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        train_limit=args.train_limit,
        threads=args.threads,
    )
    print(json.dumps(record, indent=2))
    return 0
