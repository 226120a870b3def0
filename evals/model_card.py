"""Hugging Face Hub model cards for FastV-patched models, built from measured results (``fastvision card``).

The card's YAML metadata goes through huggingface_hub's ``ModelCardData``: ``base_model``, tags,
``pipeline_tag: image-text-to-text``, the recommended fastvision config, and a model-index with accuracy and relative
prefill FLOPs for every measured setting (each ``EvalResult``'s ``metric_config`` names the setting). The body holds
the table, the Pareto plot and the command that reproduces the numbers. Every number is read from the results file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastvision.evals.card_sources import RECOMMEND_TOLERANCE, CardRow, CardSource, is_bundled

TASK_TYPE = "visual-question-answering"
TAGS = ["fastvision", "fastv", "visual-token-pruning", "vision-language", "image-text-to-text"]


def _eval_results(source: CardSource) -> list[Any]:
    from huggingface_hub import EvalResult

    dataset = {"task_type": TASK_TYPE, "task_name": "Visual Question Answering", "dataset_type": source.dataset,
               "dataset_name": source.dataset, "dataset_split": source.split}  # fmt: skip
    results = []
    for row in source.rows:
        for metric, value in ((source.metric, row.accuracy), ("relative_prefill_flops", row.relative_flops)):
            label = "relative prefill FLOPs" if metric == "relative_prefill_flops" else metric
            results.append(EvalResult(**dataset, metric_type=metric, metric_value=value,
                                      metric_name=f"{label} ({row.name})", metric_config=row.name))  # fmt: skip
    return results


def _table(source: CardSource) -> str:
    lines = [
        f"| setting | {source.metric} | relative prefill FLOPs | prefill GFLOPs | prefill ms | kept image tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def number(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
        return "–" if value is None else f"{value / scale:.{digits}f}"

    for row in source.rows:
        kept = "–" if row.kept_image_tokens is None else f"{row.kept_image_tokens:.1f} / {row.image_tokens:.0f}"
        lines.append(
            f"| {row.name} | {row.accuracy:.3f} | {row.relative_flops:.3f} | {number(row.prefill_flops, 1e9, 3)} "
            f"| {number(row.latency_ms)} | {kept} |"
        )
    return "\n".join(lines)


SCORING_WORDS = {
    "last": "received the least attention from the last prompt token",
    "mean": "received the least attention averaged over every prompt token",
}  # FastV's two rankings (``FastVConfig.scoring``); the baselines are never recommended


def _usage(recommended: CardRow | None, source: CardSource, load: str) -> tuple[str, str, str]:
    """The card's usage snippet, the sentence on why it is the setting shown, and the pruning rule it applies."""
    if recommended is None:
        why = (f"No measured FastV setting keeps the {source.metric} within {RECOMMEND_TOLERANCE} of the unpatched "
               "model's, so this card recommends none: pick a row of the table below knowing its cost.")  # fmt: skip
        snippet = f"{load}\nfastvision.patch(model, k=..., ratio=...)  # no setting recommended"
        measured = {(row.config or {}).get("scoring", "last") for row in source.rows if row.method == "fastv"}
        rule = SCORING_WORDS[measured.pop()] if len(measured) == 1 else "ranked lowest by each row's scoring"
        return snippet, why, rule
    config = recommended.config or {}
    scoring = config.get("scoring", "last")
    extra = "" if scoring == "last" else f', scoring="{scoring}"'
    snippet = f"{load}\nfastvision.patch(model, k={config.get('k')}, ratio={config.get('ratio')}{extra})"
    why = f"`{recommended.name}` is the setting measured below."
    if source.baseline() is not None:
        why = (f"`{recommended.name}` is the measured FastV setting with the fewest prefill FLOPs whose "
               f"{source.metric} is within {RECOMMEND_TOLERANCE} of the unpatched model's.")  # fmt: skip
    return snippet, why, SCORING_WORDS.get(scoring, SCORING_WORDS["last"])


def _body(source: CardSource, model_name: str, recommended: CardRow | None, plot: str | None, reference: str) -> str:
    """The card's Markdown; ``reference`` is what the usage snippet loads (the base model's Hub id if given)."""
    environment = ", ".join(f"{key} {value}" for key, value in source.environment.items() if value is not None)
    load = f'model = AutoModelForImageTextToText.from_pretrained("{reference}")'
    if reference == source.model and is_bundled(source.model):
        load = "from fastvision.bundled import BUNDLED_MODEL\n\n" + load.replace(f'"{reference}"', "BUNDLED_MODEL")
    subject = "The bundled easy-VQA LLaVA" if is_bundled(reference) else f"`{reference}`"
    measured = "the bundled easy-VQA LLaVA" if is_bundled(source.model) else f"`{source.model}`"
    snippet, why, rule = _usage(recommended, source, load)
    plot_section = f"\n![Accuracy against relative prefill FLOPs]({plot})\n" if plot else ""
    return f"""
# {model_name}

{subject} with the `fastvision` package's FastV visual-token pruning (Chen et al., "An Image is
Worth 1/2 Tokens After Layer 2", ECCV 2024): after decoder layer K, the fraction R of image tokens
that {rule} is dropped.
The weights are unchanged; the pruning is applied at load time.

## Use

```python
import fastvision
from transformers import AutoModelForImageTextToText

{snippet}
```

{why}

## Results

{source.kind} of {measured} on `{source.dataset}` ({source.split} split, {source.questions} questions).
Prefill FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add) and are relative to the
unpatched model on the same inputs.

{_table(source)}
{plot_section}
## Reproduce

```bash
{source.reproduce}
```

Measured with {environment or "the versions recorded in the results file"}.
"""


def build_card(source: CardSource, *, base_model: str | None = None, name: str | None = None,
               plot: str | None = None) -> Any:  # fmt: skip
    """The ``ModelCard`` for ``source``; ``plot`` is the Pareto PNG's path relative to the card, if any."""
    from huggingface_hub import ModelCard, ModelCardData

    recommended = source.recommended()
    chosen = recommended.name if recommended else "no setting recommended"
    model_name = name or f"{Path(base_model or source.model).name} + FastV ({chosen})"
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=TAGS,
        model_name=model_name,
        eval_results=_eval_results(source),
        fastvision={"recommended": recommended.config if recommended else None, "source": source.kind},
    )
    body = _body(source, model_name, recommended, plot, base_model or source.model)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_card(source: CardSource, out: str | Path, *, base_model: str | None = None,
               name: str | None = None) -> Path:  # fmt: skip
    """Write README.md (and pareto.png when the source is a sweep) into ``out``; return the README's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot = None
    if source.eval_results is not None and len(source.rows) > 1:
        from fastvision.evals.plot import pareto_plot

        pareto_plot(source.eval_results, out / "pareto.png")
        plot = "pareto.png"
    card = build_card(source, base_model=base_model, name=name, plot=plot)
    path = out / "README.md"
    card.save(path)
    return path


def push_card(folder: str | Path, repo_id: str) -> str:
    """Upload the card folder to the Hub model repo ``repo_id`` (created if missing); return its URL.

    Offline or without credentials this fails with a message naming the repo and the local copy, which stays.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Model card from fastvision")  # fmt: skip
    except Exception as error:  # network, auth and offline-mode errors all land here
        raise ConnectionError(
            f"Could not push the card to the Hub repo {repo_id!r} ({type(error).__name__}: {error}). "
            f"The card is saved at {folder / 'README.md'}; push it later with --push once online and logged in."
        ) from error
    return f"https://huggingface.co/{repo_id}"
