"""The accuracy-vs-FLOPs sweep behind ``fastvision eval``.

For the unpatched model, FastV at every (k, ratio) and the baselines at the same ratios and kept-token counts (random
pruning; keep-by-position with ``--stride``; spatial pooling with ``--pool``), it measures exact-match accuracy over
the dataset (overall and per question type, where the task has types), prefill FLOPs (FlopCounterMode, per
question), median single-question prefill latency and the image tokens kept. The dataset is encoded once and shared
by every setting.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

import fastvision
from fastvision.dart.config import DARTConfig
from fastvision.divprune.config import DivPruneConfig
from fastvision.evals.results import SettingResult
from fastvision.evals.vqa import encode_batch, normalize_answer, predict_answers
from fastvision.flops import measure_flops
from fastvision.visionzip.config import VisionZipConfig


@dataclass(frozen=True)
class Setting:
    name: str
    method: str
    config: Any  # the method's config (FastVConfig, DARTConfig), None for the unpatched model


# What --methods may name: FastV at every (k, ratio); the others at the middle k, at each ratio > 0.
SWEEP_METHODS = ("fastv", "dart", "divprune", "visionzip", "random", "stride", "pool")
BASELINE_SCORINGS = ("random", "stride", "pool")  # FastV engine scorings that rank without attention


def method_config(method: str, k: int, ratio: float, scoring: str = "last", seed: int = 0) -> Any:
    """The config one sweep row of ``method`` patches with."""
    if method == "fastv":
        return fastvision.FastVConfig(k=k, ratio=ratio, scoring=scoring)
    if method == "dart":
        return DARTConfig(k=k, ratio=ratio)
    if method == "divprune":  # before the language model, whatever k the sweep's other methods use
        return DivPruneConfig(ratio=ratio)
    if method == "visionzip":  # chosen in the vision tower, before the language model
        return VisionZipConfig(ratio=ratio)
    if method in BASELINE_SCORINGS:
        return fastvision.FastVConfig(k=k, ratio=ratio, scoring=method, seed=seed)
    raise ValueError(f"Unknown sweep method {method!r}; allowed: {', '.join(SWEEP_METHODS)}.")


def sweep_settings(
    ks: list[int],
    ratios: list[float],
    scoring: str = "last",
    random_baseline: bool = True,
    seed: int = 0,
    stride_baseline: bool = False,
    pool_baseline: bool = False,
    methods: list[str] | None = None,
) -> list[Setting]:
    """The unpatched model, FastV for every (k, ratio), and every other method at the middle k for each ratio > 0,
    at the same kept-token counts.

    ``methods`` names them (``SWEEP_METHODS``); without it, FastV, random pruning and optionally keep-by-position
    (``scoring="stride"``) and spatial pooling (``scoring="pool"``)."""
    if methods is None:
        wanted = {"random": random_baseline, "stride": stride_baseline, "pool": pool_baseline}
        methods = ["fastv", *(method for method, chosen in wanted.items() if chosen)]
    unknown = [method for method in methods if method not in SWEEP_METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown sweep method(s) {unknown or methods}; allowed: {', '.join(SWEEP_METHODS)}.")
    settings = [Setting("unpatched", "unpatched", None)]
    if "fastv" in methods:
        for k in ks:
            for ratio in ratios:
                settings.append(Setting(f"fastv K={k} R={ratio:g}", "fastv", method_config("fastv", k, ratio, scoring)))
    k = 2 if 2 in ks else ks[len(ks) // 2]
    for method in dict.fromkeys(methods):
        if method == "fastv":
            continue
        for ratio in ratios:
            if ratio > 0:
                config = method_config(method, k, ratio, seed=seed)
                settings.append(Setting(f"{method} K={config.stages[0][0]} R={ratio:g}", method, config))
    return settings


def encode_dataset(
    processor: Any, dataset: Any, batch_size: int, types: list[str] | None = None
) -> list[tuple[dict[str, torch.Tensor], list[str], list[str] | None]]:
    """Model inputs, reference answers and question types (None without types), batch by batch."""
    encoded = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        kinds = None if types is None else types[start : start + batch_size]
        encoded.append((encode_batch(processor, rows["image"], rows["question"]), list(rows["answer"]), kinds))
    return encoded


def _single_questions(batches: list, count: int) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` questions as batch-of-one inputs (unpadded), for FLOPs and latency."""
    singles = []
    for inputs, *_ in batches:
        for row in range(inputs["input_ids"].shape[0]):
            valid = inputs["attention_mask"][row].bool()
            single = {"input_ids": inputs["input_ids"][row : row + 1, valid]}
            single["pixel_values"] = inputs["pixel_values"][row : row + 1]
            singles.append(single)
            if len(singles) == count:
                return singles
    return singles


@torch.inference_mode()
def evaluate_setting(
    model: Any,
    processor: Any,
    batches: list,
    setting: Setting,
    singles: list[dict[str, torch.Tensor]],
    advance: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Accuracy, kept tokens, FLOPs and latency of one setting (the model is patched for it and unpatched after)."""
    if setting.config is not None:
        fastvision.patch(model, setting.config)
    try:
        correct = questions = 0
        image_tokens = kept_tokens = 0
        by_type: dict[str, list[int]] = {}
        for inputs, answers, kinds in batches:
            predictions = predict_answers(model, processor, inputs)
            hits = [p == normalize_answer(a) for p, a in zip(predictions, answers, strict=True)]
            correct += sum(hits)
            questions += len(answers)
            for kind, hit in zip(kinds or [], hits, strict=False):
                tally = by_type.setdefault(kind, [0, 0])
                tally[0], tally[1] = tally[0] + hit, tally[1] + 1
            count = int((inputs["input_ids"] == model.config.image_token_id).sum())
            image_tokens += count
            kept_tokens += _kept_image_tokens(model, setting, count)
            advance(len(answers))
        flops = [measure_flops(lambda x=x: model(**x, logits_to_keep=1, use_cache=False))[0].total for x in singles]
        model(**singles[0], logits_to_keep=1, use_cache=False)  # warm-up
        latencies = []
        for single in singles:
            start = time.perf_counter()
            model(**single, logits_to_keep=1, use_cache=False)
            latencies.append(time.perf_counter() - start)
    finally:
        if setting.config is not None:
            fastvision.unpatch(model)
    return {
        "correct": correct,
        "questions": questions,
        "accuracy": correct / questions,
        "prefill_flops": sum(flops) / len(flops),
        "latency_ms": 1000 * statistics.median(latencies),
        "image_tokens": image_tokens / questions,
        "kept_image_tokens": kept_tokens / questions,
        "by_type": {kind: by_type[kind] for kind in sorted(by_type)} or None,
    }


def _kept_image_tokens(model: Any, setting: Any, count: int) -> int:
    """Image tokens the batch's prefill kept: every one unpatched, else the engine's record, which must exist."""
    if setting.config is None:
        return count
    record = fastvision.kept_tokens(model)
    if record is None:
        if count == 0:
            return 0
        raise RuntimeError(
            f"The patched model ({setting.config}) left no kept-token record for a batch with {count} image tokens: "
            "the engine did not prune this prefill, so its accuracy and FLOPs would be the unpatched model's."
        )
    return sum(record.num_kept_visual_tokens)


def run_sweep(
    model: Any,
    processor: Any,
    dataset: Any,
    settings: list[Setting],
    *,
    batch_size: int = 64,
    timing_questions: int = 8,
    progress: bool = True,
    types: list[str] | None = None,
) -> list[SettingResult]:
    """Evaluate every setting on ``dataset``; rows come back in ``settings`` order, FLOPs relative to unpatched.

    ``types`` (one per question) adds per-question-type accuracy to every row."""
    batches = encode_dataset(processor, dataset, batch_size, types)
    singles = _single_questions(batches, timing_questions)
    measured = []
    with _progress_bar(progress, len(settings) * len(dataset)) as advance:
        for setting in settings:
            measured.append((setting, evaluate_setting(model, processor, batches, setting, singles, advance)))
    base = next((m for s, m in measured if s.method == "unpatched"), None)
    base_flops = base["prefill_flops"] if base is not None else float("nan")
    return [
        SettingResult(
            name=setting.name,
            method=setting.method,
            config=None if setting.config is None else setting.config.to_dict(),
            relative_flops=m["prefill_flops"] / base_flops,
            **m,
        )
        for setting, m in measured
    ]


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over all (setting, question) pairs; silent when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress() as progress:
        task = progress.add_task("evaluating", total=total)
        yield lambda n: progress.advance(task, n)
