"""The results file of ``fastvision eval``: one versioned JSON that the table, the plot and model cards all read.

Each number is produced once, by the sweep, and every consumer reads it from here.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = "fastvision.eval/1"


@dataclass
class SettingResult:
    """One row of a sweep: the unpatched model, FastV at (k, ratio), or random pruning at the same ratio."""

    name: str
    method: str  # "unpatched", "fastv", "dart", or a baseline: "random", "stride" or "pool"
    config: dict[str, Any] | None  # the method config's to_dict(), None for the unpatched model
    accuracy: float
    correct: int
    questions: int
    prefill_flops: float  # mean per question, 2 FLOPs per multiply-add
    relative_flops: float  # prefill_flops / the unpatched model's
    latency_ms: float  # median single-question prefill
    image_tokens: float  # mean per question
    kept_image_tokens: float  # mean per question, as seen by the last pruned layers
    tower: str | None = None  # the vision tower, in the towers study (python -m evals.experiments.towers)
    by_type: dict[str, list[int]] | None = None  # question type -> [correct, questions], where the task has types

    def type_accuracy(self) -> dict[str, float]:
        """Accuracy per question type (empty where the dataset has no types)."""
        return {kind: correct / total for kind, (correct, total) in (self.by_type or {}).items() if total}


@dataclass
class EvalResults:
    model: str
    dataset: dict[str, Any]
    settings: list[SettingResult]
    seed: int = 0
    duration_seconds: float = 0.0
    created: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def baseline(self) -> SettingResult:
        for setting in self.settings:
            if setting.method == "unpatched":
                return setting
        raise ValueError("These results have no unpatched baseline row.")

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResults:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"Not a fastvision eval results file: schema is {found!r}, expected {SCHEMA!r}.")
        known = {f.name for f in fields(SettingResult)}
        try:
            settings = [SettingResult(**{k: v for k, v in row.items() if k in known}) for row in data["settings"]]
            top = {f.name for f in fields(cls)} - {"settings"}
            return cls(settings=settings, **{k: v for k, v in data.items() if k in top})
        except (KeyError, TypeError) as error:
            raise ValueError(f"Malformed fastvision eval results: {error}.") from error

    @classmethod
    def from_json(cls, path: str | Path) -> EvalResults:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}.") from error
        return cls.from_dict(data)


def environment() -> dict[str, Any]:
    """Package versions and the machine, recorded with every results file."""
    import torch
    import transformers

    import fastvision

    return {
        "fastvision": fastvision.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
