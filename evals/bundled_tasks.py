"""The bundled tasks of ``fastvision eval --task``: each pairs an offline dataset with the checkpoint trained on it.

- ``digits`` (the default of ``fastvision eval``): sparse scenes of real handwritten digits (``digits_data``), where
  most image tokens are background and each answer depends on a few small regions, so *which* tokens a method keeps
  decides the answer;
- ``easyvqa``: easy-VQA's single large shapes, where any few tokens suffice (FastV and random pruning tie down to 10%
  of the image tokens).

A task names its question types, so every sweep also reports which kinds of question pruning hurts first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvision.bundled import BUNDLED_DIGITS_MODEL, BUNDLED_MODEL


@dataclass(frozen=True)
class BundledTask:
    name: str
    dataset_name: str  # the name results files and model cards record
    model: Path  # the bundled checkpoint trained on the task
    train_command: str  # the seeded command that reproduces ``model``
    load: Callable[[str, int | None], Any]  # (split, limit) -> datasets.Dataset with image, question, answer
    question_type: Callable[[dict[str, Any]], str]  # one row -> its question type


def _load_digits(split: str, limit: int | None) -> Any:
    from fastvision.evals.digits_data import load_digits_vqa

    return load_digits_vqa(split, limit=limit)


def _load_easyvqa(split: str, limit: int | None) -> Any:
    from fastvision.evals.data import load_easyvqa

    return load_easyvqa(split, limit=limit)


def _easyvqa_type(row: dict[str, Any]) -> str:
    from fastvision.evals.easyvqa_breakdown import question_group

    return question_group(row["question"], row["answer"])


TASKS: dict[str, BundledTask] = {
    "digits": BundledTask(
        "digits", "digits", BUNDLED_DIGITS_MODEL, "fastvision train-bundled --task digits", _load_digits,
        lambda row: row["question_type"],
    ),
    "easyvqa": BundledTask(
        "easyvqa", "easy-vqa", BUNDLED_MODEL, "fastvision train-bundled", _load_easyvqa, _easyvqa_type
    ),
}  # fmt: skip


def get_task(name: str) -> BundledTask:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; bundled tasks: {', '.join(TASKS)}.")
    return TASKS[name]


def task_for_dataset(dataset_name: str) -> BundledTask | None:
    """The bundled task whose results record ``dataset_name``, if any."""
    return next((task for task in TASKS.values() if task.dataset_name == dataset_name), None)


def question_types(task: BundledTask | None, dataset: Any) -> list[str] | None:
    """Each row's question type: the task's, or a ``question_type`` column of a user's dataset, else None."""
    if task is not None:
        columns = [name for name in ("question", "answer", "question_type") if name in dataset.column_names]
        values = dataset.select_columns(columns).to_dict()
        return [task.question_type(dict(zip(values, row, strict=True))) for row in zip(*values.values(), strict=True)]
    if "question_type" in dataset.column_names:
        return [str(kind) for kind in dataset["question_type"]]
    return None


def check_answerable(processor: Any, dataset: Any, model_name: str) -> None:
    """Refuse a word-level model whose vocabulary lacks some of the dataset's answers (it could never say them)."""
    tokenizer = processor.tokenizer
    unknown = tokenizer.unk_token_id
    if unknown is None or len(tokenizer) > 10_000:  # subword tokenizers spell every answer
        return
    answers = sorted(set(dataset["answer"]))
    missing = [answer for answer in answers if unknown in tokenizer(answer, add_special_tokens=False)["input_ids"]]
    if missing:
        raise ValueError(
            f"Model {model_name!r} cannot answer this task: its vocabulary has no token for the answers "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}. Use the task's own bundled model (--task picks it)."
        )
