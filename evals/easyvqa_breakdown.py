"""Accuracy of a model on easy-VQA by question group: what shape, what colour, and yes/no questions about a colour or
a shape that is present or absent (negations read: "is there not a red shape?" answered "no" asks about a present
colour). ``python -m fastvision.evals.easyvqa_breakdown [--model PATH] [--limit N]`` prints the table; it is how the
bundled model's remaining errors were located (docs/tasks.md, "The easy-VQA model")."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import torch

from fastvision.bundled.train import COLORS

NEGATIONS = (" not ", "is no ")


def question_group(question: str, answer: str) -> str:
    if answer not in ("yes", "no"):
        return f"what {'color' if answer in COLORS else 'shape'}"
    kind = "color" if any(color in question.split() for color in COLORS) else "shape"
    negated = any(negation in f" {question} " for negation in NEGATIONS)
    present = (answer == "yes") != negated
    return f"{kind} {'present' if present else 'absent'}"


@torch.no_grad()
def breakdown(model: Any, processor: Any, dataset: Any, batch_size: int = 64) -> dict[str, tuple[int, int]]:
    """{group: (correct, questions)}."""
    from fastvision.evals.vqa import batches, encode_batch, normalize_answer, predict_answers

    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for rows in batches(dataset, batch_size):
        predictions = predict_answers(model, processor, encode_batch(processor, rows["image"], rows["question"]))
        for question, answer, predicted in zip(rows["question"], rows["answer"], predictions, strict=True):
            group = question_group(question, answer)
            total[group] += 1
            correct[group] += predicted == normalize_answer(answer)
    return {group: (correct[group], total[group]) for group in sorted(total)}


def main(argv: list[str] | None = None) -> int:
    from fastvision.cli.eval_cmd import load_model_for_eval
    from fastvision.evals.data import load_easyvqa

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args(argv)
    model, processor, _ = load_model_for_eval(args.model)
    rows = breakdown(model, processor, load_easyvqa("test", limit=args.limit or None))
    for group, (right, count) in rows.items():
        print(f"{group:14s} {right / count:6.3f}  ({right}/{count})")
    right, count = sum(r for r, _ in rows.values()), sum(c for _, c in rows.values())
    print(f"{'all':14s} {right / count:6.3f}  ({right}/{count})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
