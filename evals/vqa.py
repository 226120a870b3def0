"""Answering VQA questions with a LLaVA-style model and its processor: prompts, batching and exact-match scoring.

Shared by the training recipe (its held-out check) and the eval harness, so both score answers the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch


def chat_prompt(processor: Any, question: str) -> str:
    """The user turn with one image and ``question``, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def encode_batch(processor: Any, images: Sequence[Any], questions: Sequence[str]) -> dict[str, torch.Tensor]:
    """Left-padded model inputs for (image, question) pairs."""
    prompts = [chat_prompt(processor, question) for question in questions]
    rgb = [image.convert("RGB") for image in images]
    processor.tokenizer.padding_side = "left"
    return dict(processor(images=rgb, text=prompts, return_tensors="pt", padding=True))


def normalize_answer(text: str) -> str:
    return text.strip().lower().rstrip(".?!").strip()


@torch.no_grad()
def predict_answers(model: Any, processor: Any, inputs: dict[str, torch.Tensor]) -> list[str]:
    """Greedy one-word answers: the argmax of the prefill's last-position logits (one forward, no cache)."""
    logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
    return [normalize_answer(word) for word in processor.tokenizer.batch_decode(logits.argmax(-1)[:, None])]


def batches(dataset: Any, batch_size: int) -> Iterator[Any]:
    for start in range(0, len(dataset), batch_size):
        yield dataset[start : start + batch_size]


def exact_match_accuracy(model: Any, processor: Any, dataset: Any, batch_size: int = 64) -> float:
    """Fraction of ``dataset`` rows (image, question, answer) answered exactly (case-insensitive)."""
    correct = 0
    for rows in batches(dataset, batch_size):
        inputs = encode_batch(processor, rows["image"], rows["question"])
        predictions = predict_answers(model, processor, inputs)
        correct += sum(p == normalize_answer(a) for p, a in zip(predictions, rows["answer"], strict=True))
    return correct / len(dataset)
