"""What a model card is built from: a ``fastvision eval`` results JSON or an lm-eval results JSON of the
``fastvision`` lm-eval model, read into one shape (rows of accuracy and relative FLOPs) with the command that
reproduces them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastvision.evals.bundled_tasks import task_for_dataset
from fastvision.evals.results import SCHEMA, EvalResults

RECOMMEND_TOLERANCE = 0.01  # the accuracy a recommended setting may lose against the unpatched model


@dataclass(frozen=True)
class CardRow:
    """One measured setting: the unpatched model, FastV at (k, ratio), or random pruning."""

    name: str
    method: str  # "unpatched", "fastv", another method ("dart", ...), or a baseline: "random", "stride" or "pool"
    config: dict[str, Any] | None
    accuracy: float
    relative_flops: float
    prefill_flops: float | None = None
    latency_ms: float | None = None
    image_tokens: float | None = None
    kept_image_tokens: float | None = None


@dataclass(frozen=True)
class CardSource:
    kind: str  # "fastvision eval" or "lm-eval"
    model: str  # as the results name it: a Hub id or a local folder
    dataset: str  # dataset id (fastvision eval) or lm-eval task name
    split: str
    questions: int
    metric: str  # "accuracy" or the lm-eval metric name, e.g. "exact_match"
    rows: list[CardRow]
    reproduce: str
    environment: dict[str, Any]
    eval_results: EvalResults | None = None  # kept for the Pareto plot

    def baseline(self) -> CardRow | None:
        return next((row for row in self.rows if row.method == "unpatched"), None)

    def recommended(self, tolerance: float = RECOMMEND_TOLERANCE) -> CardRow | None:
        """The FastV row with the fewest FLOPs whose accuracy is within ``tolerance`` of the unpatched model's, or
        ``None`` when no FastV row is that close (the card then recommends nothing). Without an unpatched row, the
        most accurate FastV row."""
        fastv = [row for row in self.rows if row.method == "fastv" and row.config and row.config.get("ratio", 0) > 0]
        if not fastv:
            raise ValueError("These results have no FastV row with a ratio above 0 to recommend.")
        base = self.baseline()
        if base is None:
            return max(fastv, key=lambda row: (row.accuracy, -row.relative_flops))
        good = [row for row in fastv if row.accuracy >= base.accuracy - tolerance]
        return min(good, key=lambda row: (row.relative_flops, -row.accuracy)) if good else None


def load_card_source(path: str | Path) -> CardSource:
    """Read either results format; anything else is refused with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results file at {path}.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}.") from error
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        return _from_fastvision_eval(EvalResults.from_dict(data))
    if isinstance(data, dict) and "results" in data and "config" in data:
        return _from_lm_eval(data, path)
    raise ValueError(
        f"{path} is neither a fastvision eval results file (schema {SCHEMA!r}) nor an lm-eval results file "
        "(keys 'results' and 'config')."
    )


def is_bundled(model: str) -> bool:
    """Whether ``model`` is the bundled easy-VQA LLaVA's folder (wherever the package is installed)."""
    return Path(model).parts[-3:] == ("fastvision", "bundled", "easyvqa-llava")


def _from_fastvision_eval(results: EvalResults) -> CardSource:
    rows = [
        CardRow(
            s.name,
            s.method,
            s.config,
            s.accuracy,
            s.relative_flops,
            s.prefill_flops,
            s.latency_ms,
            s.image_tokens,
            s.kept_image_tokens,
        )
        for s in results.settings
    ]
    return CardSource(
        kind="fastvision eval",
        model=results.model,
        dataset=results.dataset.get("name", "unknown"),
        split=results.dataset.get("split", "test"),
        questions=int(results.dataset.get("questions", 0)),
        metric="accuracy",
        rows=rows,
        reproduce=_fastvision_eval_command(results),
        environment=results.environment,
        eval_results=results,
    )


def _fastvision_eval_command(results: EvalResults) -> str:
    fastv = [s.config for s in results.settings if s.method == "fastv" and s.config]
    command = ["fastvision", "eval"]
    if not is_bundled(results.model):
        command += ["--model", results.model]
    task = task_for_dataset(results.dataset.get("name", "easy-vqa"))
    command += ["--task", task.name] if task is not None else ["--dataset", results.dataset["name"]]
    if results.dataset.get("split", "test") != "test":
        command += ["--split", results.dataset["split"]]
    command += ["--limit", str(results.dataset.get("questions", 0))]
    if fastv:
        command += ["--k", *sorted({str(c["k"]) for c in fastv}, key=int)]
        command += ["--ratio", *[f"{r:g}" for r in sorted({c["ratio"] for c in fastv})]]
        if fastv[0].get("scoring", "last") != "last":
            command += ["--scoring", fastv[0]["scoring"]]
    methods = list(dict.fromkeys(s.method for s in results.settings if s.method != "unpatched"))
    if not set(methods) <= {"fastv", "random", "stride", "pool"}:  # another method: name them all
        command += ["--methods", ",".join(methods)]
    else:
        if "random" not in methods:
            command.append("--no-random")
        command += [f"--{baseline}" for baseline in ("stride", "pool") if baseline in methods]
    if results.seed:
        command += ["--seed", str(results.seed)]
    return " ".join(command)


def _task_metric(task_results: dict[str, Any]) -> tuple[str, float]:
    """The task's main metric: exact_match or acc when present, else its first numeric metric."""
    metrics = {
        key.split(",")[0]: value
        for key, value in task_results.items()
        if "," in key and "_stderr" not in key and isinstance(value, (int, float))
    }
    for preferred in ("exact_match", "acc", "accuracy", "acc_norm"):
        if preferred in metrics:
            return preferred, float(metrics[preferred])
    if not metrics:
        raise ValueError(f"The lm-eval task results have no metric: {sorted(task_results)}.")
    name = sorted(metrics)[0]
    return name, float(metrics[name])


def _from_lm_eval(data: dict[str, Any], path: Path) -> CardSource:
    report = data["config"].get("fastvision") if isinstance(data["config"], dict) else None
    if not isinstance(report, dict):
        raise ValueError(
            f"{path} is an lm-eval results file, but not from the fastvision model (no config.fastvision); "
            "run it with `fastvision lm-eval --model fastvision ...`."
        )
    if "relative_prefill_flops" not in report:
        raise ValueError(f"{path} has no FLOPs: the run had fastv_measure=false. Rerun with fastv_measure=true.")
    if not data["results"]:
        raise ValueError(f"{path} has no task results.")
    task = sorted(data["results"])[0]
    metric, value = _task_metric(data["results"][task])
    config = report["config"]
    if config.get("method") in ("dart", "divprune", "visionzip"):  # another method on the engine (fastv_method)
        method = config["method"]
    else:
        method = config["scoring"] if config.get("scoring") in ("random", "stride", "pool") else "fastv"
    name = f"{method} K={config['k']} R={config['ratio']:g}"
    row = CardRow(
        name=name,
        method=method,
        config=config,
        accuracy=value,
        relative_flops=float(report["relative_prefill_flops"]),
        prefill_flops=report.get("prefill_flops_per_request"),
        latency_ms=report.get("prefill_ms_per_request"),
        image_tokens=report.get("image_tokens_per_request"),
        kept_image_tokens=report.get("kept_image_tokens_per_request"),
    )
    model_args = data["config"].get("model_args", "")
    if isinstance(model_args, dict):
        model_args = ",".join(f"{key}={value}" for key, value in model_args.items())
    pretrained = next((part.split("=", 1)[1] for part in model_args.split(",") if part.startswith("pretrained=")), "")
    command = ["fastvision", "lm-eval", "--model", "fastvision", "--model_args", model_args, "--tasks", task]
    if data["config"].get("limit"):
        command += ["--limit", f"{data['config']['limit']:g}"]
    if data["config"].get("batch_size"):
        command += ["--batch_size", str(data["config"]["batch_size"])]
    if data["config"].get("device"):
        command += ["--device", str(data["config"]["device"])]
    if data.get("chat_template"):
        command.append("--apply_chat_template")
    samples = data.get("n-samples", {}).get(task, {})
    return CardSource(
        kind="lm-eval",
        model=pretrained or str(data.get("model_name", "unknown")),
        dataset=task,
        split="test",
        questions=int(samples.get("effective", report.get("requests", 0))),
        metric=metric,
        rows=[row],
        reproduce=" ".join(command),
        environment={
            "lm_eval": data.get("lm_eval_version"),
            "transformers": data.get("transformers_version"),
            "fastvision": report.get("version"),
        },
    )
