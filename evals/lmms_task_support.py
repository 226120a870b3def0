"""The offline lmms-eval tasks ``easyvqa`` and ``digits`` (``evals/lmms_tasks``): data built from PyPI packages,
prompts and scoring identical to ``fastvision eval``'s, so the two harnesses give the same accuracy.

lmms-eval loads a task's documents with ``datasets.load_dataset`` from the Hub; these tasks override ``download``
(the hook lmms-eval's own file-based tasks use) to build the test split locally instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmms_eval.api.task import ConfigurableMessagesTask

from fastvision.evals.vqa import normalize_answer


class OfflineVQATask(ConfigurableMessagesTask):
    """A chat task whose test split comes from ``load_split()`` (image, question, answer rows), no download."""

    load_split: Callable[[], Any]

    def __init__(self, *args: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config = {key: value for key, value in (config or {}).items() if key != "class"}
        super().__init__(*args, config=config, **kwargs)

    def download(self, dataset_kwargs: dict[str, Any] | None = None) -> None:
        from datasets import DatasetDict

        self.dataset = DatasetDict({self.config.test_split: type(self).load_split()})
        self.dataset_no_image = DatasetDict(
            {self.config.test_split: self.dataset[self.config.test_split].remove_columns("image")}
        )


def doc_to_messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One user turn with the image and the question: the same chat as ``fastvision.evals.vqa.chat_prompt``."""
    content = [{"type": "image", "url": doc["image"].convert("RGB")}, {"type": "text", "text": doc["question"]}]
    return [{"role": "user", "content": content}]


def doc_to_text(doc: dict[str, Any]) -> str:
    return doc["question"]


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match after ``normalize_answer``, as ``fastvision eval`` scores."""
    return {"exact_match": float(normalize_answer(results[0]) == normalize_answer(doc["answer"]))}
