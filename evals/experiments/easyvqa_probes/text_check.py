"""Can the bundled recipe's language model learn easy-VQA's yes/no questions at all? A text-only check (issue #4).

The image is replaced by two words naming its true colour and shape ("red circle is there a red shape?"), and the
bundled model's LLaMA (4 layers, width 128, the bundled word-level tokenizer) trains from scratch on the answer token
with the bundled recipe's batch size and learning-rate schedule. If the yes/no groups stay at their majority answer even
here, the vision tower and projector are not what limits the bundled model: the language model does not learn the
comparison. ``--balance`` makes a third of each batch the minority ("present") questions; ``--no-negations`` drops
the negated questions ("is there not a red shape?", half of the yes/no ones), whose answer is the comparison flipped.

``python -m evals.experiments.easyvqa_probes text-check --steps 3000`` prints the held-out accuracy per question group
every 250 steps (about 3 minutes on one core).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from typing import Any

import torch

NEGATION_WORDS = {"not", "no"}


def text_rows(split: str, tokenizer: Any, limit: int | None = None) -> list[tuple[list[int], int, str]]:
    """(prompt ids with the image's colour and shape words first, answer id, question group) per question."""
    from fastvision.bundled.train import COLORS, SHAPES, _image_labels
    from fastvision.evals.data import load_easyvqa
    from fastvision.evals.easyvqa_breakdown import question_group

    labels = _image_labels(load_easyvqa(split))
    dataset = load_easyvqa(split, limit=limit)
    rows = []
    for question, answer, image_id in zip(dataset["question"], dataset["answer"], dataset["image_id"], strict=True):
        if image_id in labels:  # images whose what-questions name both attributes
            shape, color = labels[image_id]
            prompt = tokenizer(f"{COLORS[color]} {SHAPES[shape]} {question}", add_special_tokens=False)["input_ids"]
            rows.append((prompt, tokenizer.convert_tokens_to_ids(answer), question_group(question, answer)))
    return rows


def encode(rows: list[tuple[list[int], int, str]], pad: int, with_answer: bool) -> tuple[torch.Tensor, ...]:
    """Right-padded (with the answer as the only label) for training, left-padded for scoring the next token."""
    sequences = [[*prompt, answer] if with_answer else prompt for prompt, answer, _ in rows]
    width = max(map(len, sequences))
    ids = torch.full((len(rows), width), pad)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for row, sequence in enumerate(sequences):
        span = slice(0, len(sequence)) if with_answer else slice(width - len(sequence), width)
        ids[row, span], mask[row, span] = torch.tensor(sequence), 1
        if with_answer:
            labels[row, len(sequence) - 1] = sequence[-1]
    return ids, mask, labels


@torch.no_grad()
def score(model: Any, rows: list[tuple[list[int], int, str]], pad: int) -> dict[str, float]:
    model.eval()
    correct, total = Counter(), Counter()
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        ids, mask, _ = encode(chunk, pad, with_answer=False)
        predictions = model(input_ids=ids, attention_mask=mask).logits[:, -1].argmax(-1).tolist()
        for (_, answer, group), prediction in zip(chunk, predictions, strict=True):
            total[group] += 1
            correct[group] += prediction == answer
    model.train()
    return {group: round(correct[group] / total[group], 3) for group in sorted(total)}


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoProcessor

    from fastvision.bundled import BUNDLED_MODEL
    from fastvision.bundled.build import build_model

    parser = argparse.ArgumentParser(
        prog="python -m evals.experiments.easyvqa_probes text-check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=2e-3, help="the bundled recipe's")
    parser.add_argument("--batch-size", type=int, default=48, help="the bundled recipe's")
    parser.add_argument("--balance", action="store_true", help="a third of each batch from 'present' questions")
    parser.add_argument("--no-negations", action="store_true", help="drop the negated yes/no questions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tokenizer = AutoProcessor.from_pretrained(BUNDLED_MODEL).tokenizer
    train, test = text_rows("train", tokenizer), text_rows("test", tokenizer, limit=3000)
    if args.no_negations:

        def plain(rows: list) -> list:
            return [row for row in rows if not NEGATION_WORDS & set(tokenizer.decode(row[0]).split())]

        train, test = plain(train), plain(test)
    present = [index for index, row in enumerate(train) if row[2].endswith("present")]
    torch.manual_seed(args.seed)
    model = build_model(tokenizer, seed=args.seed)  # the bundled LLaVA; only its language model is used here
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)  # the bundled recipe's schedule: linear warm-up, then cosine decay

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{len(train)} training and {len(test)} test questions", flush=True)
    started = time.perf_counter()
    for step in range(args.steps):
        chosen = torch.randint(0, len(train), (args.batch_size,), generator=generator).tolist()
        if args.balance:
            third = args.batch_size // 3
            picks = torch.randint(0, len(present), (third,), generator=generator).tolist()
            chosen[:third] = [present[index] for index in picks]
        ids, mask, labels = encode([train[index] for index in chosen], tokenizer.pad_token_id, with_answer=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if (step + 1) % 250 == 0:
            accuracy = score(model, test, tokenizer.pad_token_id)
            print(f"step {step + 1} ({time.perf_counter() - started:.0f} s): {accuracy}", flush=True)
    return 0
