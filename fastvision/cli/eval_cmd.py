"""``fastvision eval``: the accuracy-vs-FLOPs sweep, offline on the bundled easy-VQA LLaVA by default."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_KS = [1, 2, 3]
DEFAULT_RATIOS = [0.0, 0.25, 0.5, 0.75, 0.9]
DEFAULT_LIMIT = 2000


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="Accuracy vs prefill FLOPs sweep (default: the bundled easy-VQA LLaVA, offline).",
        description="Sweep FastV over K and ratio (plus random pruning) and write results.json, a table and a "
        "Pareto plot. Defaults run offline on the bundled model and easy-VQA's test split.",
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the bundled easy-VQA LLaVA)")
    parser.add_argument("--dataset", default="easy-vqa", help="'easy-vqa', or a datasets folder/Hub id with "
                        "image, question and answer columns")  # fmt: skip
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"questions (default {DEFAULT_LIMIT}; 0 = all)"
    )
    parser.add_argument("--k", type=int, nargs="+", default=DEFAULT_KS)
    parser.add_argument("--ratio", type=float, nargs="+", default=DEFAULT_RATIOS)
    parser.add_argument("--scoring", default="last", choices=["last", "mean"])
    parser.add_argument("--no-random", action="store_true", help="skip the random-pruning baseline rows")
    parser.add_argument(
        "--stride", action="store_true", help="add keep-by-position baseline rows (evenly spaced image tokens)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fastvision-eval", help="output folder (results.json, pareto.png)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def load_dataset_for_eval(name: str, split: str, limit: int | None) -> Any:
    """easy-VQA from the installed package, or any ``datasets`` dataset with image/question/answer columns."""
    if name == "easy-vqa":
        from fastvision.evals.data import load_easyvqa

        dataset = load_easyvqa(split, limit=limit)
    else:
        import datasets

        try:
            dataset = datasets.load_dataset(name, split=split)
        except Exception as error:  # datasets raises many types for a missing dataset or split
            raise ValueError(f"Cannot load dataset {name!r} split {split!r}: {error}") from error
        missing = [column for column in ("image", "question", "answer") if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"Dataset {name!r} lacks the column(s) {missing}; it has {dataset.column_names}. "
                "fastvision eval needs image, question and answer columns."
            )
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"Dataset {name!r} split {split!r} is empty.")
    return dataset


def load_model_for_eval(name: str | None) -> tuple[Any, Any, str]:
    """The model and processor (``from_pretrained``), checked to be a family fastvision patches."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from fastvision.bundled import BUNDLED_MODEL
    from fastvision.registry import adapter_for

    source = str(BUNDLED_MODEL) if name is None else name
    if name is None and not (BUNDLED_MODEL / "config.json").is_file():
        raise ValueError(f"The bundled model is missing at {BUNDLED_MODEL}; run `fastvision train-bundled`.")
    try:
        model = AutoModelForImageTextToText.from_pretrained(source).eval()
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot load model {source!r}: {error}") from error
    adapter_for(model)
    return model, processor, source


def run(args: argparse.Namespace) -> int:
    from fastvision.evals.plot import pareto_plot
    from fastvision.evals.results import EvalResults, environment
    from fastvision.evals.sweep import run_sweep, sweep_settings

    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0 (0 = the whole split), got {args.limit}.")
    settings = sweep_settings(  # validates k and ratio
        args.k, args.ratio, args.scoring, not args.no_random, args.seed, stride_baseline=args.stride
    )
    dataset = load_dataset_for_eval(args.dataset, args.split, args.limit or None)
    model, processor, source = load_model_for_eval(args.model)
    layers = model.config.get_text_config().num_hidden_layers
    if max(args.k) >= layers:
        raise ValueError(f"--k {max(args.k)} is out of range for this model: allowed is 1 <= k < {layers}.")
    started = time.perf_counter()
    rows = run_sweep(model, processor, dataset, settings, batch_size=args.batch_size, progress=not args.quiet)
    results = EvalResults(
        model=source,
        dataset={"name": args.dataset, "split": args.split, "questions": len(dataset)},
        settings=rows,
        seed=args.seed,
        duration_seconds=round(time.perf_counter() - started, 1),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=environment(),
    )
    out = Path(args.out)
    json_path = results.to_json(out / "results.json")
    png_path = pareto_plot(results, out / "pareto.png")
    print_table(results)
    print(f"wrote {json_path} and {png_path} ({results.duration_seconds:.0f} s)")
    return 0


def print_table(results: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{Path(results.model).name} on {results.dataset['name']} ({results.dataset['questions']} q)")
    for column in ("setting", "accuracy", "prefill GFLOPs", "rel. FLOPs", "latency ms", "kept img tokens"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in results.settings:
        table.add_row(
            row.name,
            f"{row.accuracy:.3f}",
            f"{row.prefill_flops / 1e9:.3f}",
            f"{row.relative_flops:.3f}",
            f"{row.latency_ms:.1f}",
            f"{row.kept_image_tokens:.1f} / {row.image_tokens:.0f}",
        )
    Console(width=max(Console().width, 100)).print(table)
