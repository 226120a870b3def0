"""Data for the offline lm-eval task ``easyvqa``: easy-VQA's test split from the easy-vqa package, no download."""

from __future__ import annotations

from typing import Any


def easyvqa_dataset(**metadata: Any) -> Any:
    """A ``DatasetDict`` with the test split (image, question, answer); lm-eval passes task metadata, unused here."""
    from datasets import DatasetDict

    from fastvision.evals.data import load_easyvqa

    return DatasetDict({"test": load_easyvqa("test")})
