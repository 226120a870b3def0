"""``fastvision eval``: the accuracy-vs-FLOPs sweep, offline on a bundled task and its model (digits by default)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_KS = [1, 2, 3]
DEFAULT_RATIOS = [0.0, 0.25, 0.5, 0.75, 0.9]
DEFAULT_LIMIT = 2000
TASK_NAMES = ("digits", "easyvqa")  # evals/bundled_tasks.py holds them; named here so --help needs no harness import
# digits is the default: its model meets the task's targets (0.96 unpatched, random pruning at K=2 R=0.9 0.19 lower),
# so the main job can tell a good choice of tokens from a blind one, which easy-VQA cannot (docs/tasks.md).
DEFAULT_TASK_NAME = "digits"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="Accuracy vs prefill FLOPs sweep (default: the bundled digits task and model, offline).",
        description="Sweep FastV over K and ratio (plus the baselines) and write results.json, a table, a Pareto "
        "plot and a per-question-type plot. Defaults run offline on the bundled digits task and its model.",
    )
    parser.add_argument("--task", default=None, choices=sorted(TASK_NAMES),
                        help=f"bundled task and its model (default {DEFAULT_TASK_NAME}): digits (sparse handwritten "
                        "digits, where token choice matters) or easyvqa (one large shape)")  # fmt: skip
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the task's bundled model)")
    parser.add_argument("--dataset", default=None, help="a datasets folder/Hub id with image, question and answer "
                        "columns (and optionally question_type), instead of a bundled task")  # fmt: skip
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
    parser.add_argument(
        "--pool", action="store_true", help="add spatial-pooling baseline rows (image tokens averaged on their grid)"
    )
    parser.add_argument("--methods", default=None, help="comma-separated methods to sweep, replacing --no-random, "
                        "--stride and --pool: fastv (every K and ratio), dart, random, stride, pool (each at the "
                        "middle K, for each ratio > 0), divprune and visionzip (before the language model: K=0; "
                        "visionzip on LLaVA only); e.g. fastv,dart,divprune,visionzip,random,pool")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fastvision-eval", help="output folder (results.json, pareto.png)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def load_dataset_for_eval(name: str, split: str, limit: int | None) -> Any:
    """A bundled task's split, or any ``datasets`` dataset with image/question/answer columns."""
    from fastvision.evals.bundled_tasks import TASKS

    if name in TASKS:
        dataset = TASKS[name].load(split, limit)
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


def load_model_for_eval(name: str | None, task: Any = None) -> tuple[Any, Any, str]:
    """The model and processor (``from_pretrained``), checked to be a family fastvision patches.

    ``name=None`` takes the bundled model of ``task`` (the easy-VQA one without a task).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from fastvision.bundled import BUNDLED_MODEL
    from fastvision.registry import adapter_for

    bundled = BUNDLED_MODEL if task is None else task.model
    source = str(bundled) if name is None else name
    if name is None and not (bundled / "config.json").is_file():
        command = "fastvision train-bundled" if task is None else task.train_command
        what = "The bundled model" if task is None else f"Task {task.name!r} needs its bundled model, which"
        raise ValueError(f"{what} is missing at {bundled}; run `{command}`.")
    try:
        model = AutoModelForImageTextToText.from_pretrained(source).eval()
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot load model {source!r}: {error}") from error
    adapter_for(model)
    return model, processor, source


def _resolve_task(args: argparse.Namespace) -> Any:
    """The bundled task to run (None for a user's --dataset), with the flag combinations checked."""
    from fastvision.evals.bundled_tasks import get_task

    if args.dataset is not None:
        if args.task is not None:
            raise ValueError(f"Pass --task or --dataset, not both (got --task {args.task} --dataset {args.dataset}).")
        if args.dataset in ("easy-vqa", "easyvqa", "digits"):
            return get_task("easyvqa" if args.dataset != "digits" else "digits")
        return None  # the easy-VQA bundled model unless --model; check_answerable refuses what it cannot say
    return get_task(args.task or DEFAULT_TASK_NAME)


def run(args: argparse.Namespace) -> int:
    from fastvision.evals.bundled_tasks import check_answerable, question_types
    from fastvision.evals.plot import pareto_plot, type_plot
    from fastvision.evals.results import EvalResults, environment
    from fastvision.evals.sweep import run_sweep, sweep_settings

    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0 (0 = the whole split), got {args.limit}.")
    methods = None
    if args.methods is not None:
        if args.no_random or args.stride or args.pool:
            raise ValueError("Pass either --methods or --no-random/--stride/--pool, not both.")
        methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    settings = sweep_settings(  # validates k, ratio and the methods
        args.k, args.ratio, args.scoring, not args.no_random, args.seed, stride_baseline=args.stride,
        pool_baseline=args.pool, methods=methods,
    )  # fmt: skip
    task = _resolve_task(args)
    dataset_name = args.dataset if task is None else task.name
    dataset = load_dataset_for_eval(dataset_name, args.split, args.limit or None)
    model, processor, source = load_model_for_eval(args.model, task)
    check_answerable(processor, dataset, source)
    layers = model.config.get_text_config().num_hidden_layers
    if max(args.k) >= layers:
        raise ValueError(f"--k {max(args.k)} is out of range for this model: allowed is 1 <= k < {layers}.")
    started = time.perf_counter()
    rows = run_sweep(model, processor, dataset, settings, batch_size=args.batch_size, progress=not args.quiet,
                     types=question_types(task, dataset))  # fmt: skip
    recorded_name = dataset_name if task is None else task.dataset_name
    results = EvalResults(
        model=source,
        dataset={"name": recorded_name, "split": args.split, "questions": len(dataset)},
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
    if any(row.by_type for row in results.settings):
        type_plot(results, out / "by_type.png")
        print_type_table(results)
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


def print_type_table(results: Any) -> None:
    """Accuracy per question type for every setting: which kinds of question a method loses first."""
    from rich.console import Console
    from rich.table import Table

    kinds = sorted({kind for row in results.settings for kind in (row.by_type or {})})
    table = Table(title="accuracy by question type")
    table.add_column("setting", justify="right", no_wrap=True)
    for kind in kinds:
        table.add_column(kind, justify="right", no_wrap=True)
    for row in results.settings:
        accuracy = row.type_accuracy()
        table.add_row(row.name, *[f"{accuracy[kind]:.3f}" if kind in accuracy else "-" for kind in kinds])
    Console(width=max(Console().width, 22 + 16 * len(kinds))).print(table)
