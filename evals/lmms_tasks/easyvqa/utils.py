"""The lmms-eval task ``easyvqa``: easy-VQA's test split from the easy-vqa package, no download."""

from __future__ import annotations

from typing import Any

from fastvision.evals.lmms_task_support import (  # noqa: F401  (the YAML names them from here)
    OfflineVQATask,
    doc_to_messages,
    doc_to_target,
    doc_to_text,
    process_results,
)


class EasyVQATask(OfflineVQATask):
    @staticmethod
    def load_split() -> Any:
        from fastvision.evals.data import load_easyvqa

        return load_easyvqa("test")
