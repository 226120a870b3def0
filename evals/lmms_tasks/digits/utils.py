"""The lmms-eval task ``digits``: the digit scenes' test split, built from scikit-learn's digit scans, no download."""

from __future__ import annotations

from typing import Any

from fastvision.evals.lmms_task_support import (  # noqa: F401  (the YAML names them from here)
    OfflineVQATask,
    doc_to_messages,
    doc_to_target,
    doc_to_text,
    process_results,
)


class DigitsTask(OfflineVQATask):
    @staticmethod
    def load_split() -> Any:
        from fastvision.evals.digits_data import load_digits_vqa

        return load_digits_vqa("test")
