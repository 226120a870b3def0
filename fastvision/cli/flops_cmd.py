"""``fastvision flops``: prefill FLOPs of a real-size VLM config, unpruned and with FastV, counted with no weights."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fastvision.fastv.config import FastVConfig


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="Prefill FLOPs of a VLM config with and without FastV (no weights needed).",
        description="Count prefill FLOPs (FlopCounterMode on the meta device) of a preset "
        "(llava-1.5-7b, llava-1.5-13b), a local config.json, or a Hub id, unpruned and with FastV.",
    )
    parser.add_argument("model", help="preset name, path to a config.json (or its folder), or a Hub id")
    parser.add_argument("--k", type=int, default=2, help="FastV layer K (default 2)")
    parser.add_argument("--ratio", type=float, nargs="+", default=[0.5], help="one or more ratios (default 0.5)")
    parser.add_argument("--scoring", default="last", choices=["last", "mean"])
    parser.add_argument("--image-tokens", type=int, default=None, help="default: the vision tower's token count")
    parser.add_argument("--text-tokens", type=int, default=60)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def flops_table(
    model: str, k: int, ratios: list[float], scoring: str, image_tokens: int | None, text_tokens: int
) -> dict[str, Any]:
    """Baseline and FastV prefill FLOPs of ``model`` for each ratio, with the analytic cross-check."""
    from fastvision.flops.analytic import DecoderShape, fastv_paper_macs, fastv_prefill_macs
    from fastvision.flops.presets import count_prefill_flops, image_tokens_of, load_config

    configs = [FastVConfig(k=k, ratio=ratio, scoring=scoring) for ratio in ratios]  # validate before work
    config = load_config(model)
    if config.model_type != "llava":
        raise ValueError(f"fastvision flops counts LLaVA configs; {model!r} has model_type={config.model_type!r}.")
    if not 1 <= k < config.text_config.num_hidden_layers:
        raise ValueError(f"k={k} is out of range: allowed is 1 <= k < {config.text_config.num_hidden_layers}.")
    image_tokens = image_tokens_of(config) if image_tokens is None else image_tokens
    tokens = image_tokens + text_tokens
    shape = DecoderShape.from_config(config.text_config)
    baseline = count_prefill_flops(config, image_tokens=image_tokens, text_tokens=text_tokens)
    paper_baseline = fastv_paper_macs(shape.hidden, shape.ffn, shape.layers, tokens)
    rows = []
    for fastv in configs:
        pruned = count_prefill_flops(config, image_tokens=image_tokens, text_tokens=text_tokens, fastv=fastv)
        kept = text_tokens + pruned.kept_image_tokens
        analytic = 2 * fastv_prefill_macs(shape, tokens, k=k, kept_tokens=kept, scoring=scoring)
        paper = fastv_paper_macs(shape.hidden, shape.ffn, shape.layers, tokens, k=k, kept=kept)
        rows.append(
            {
                "config": fastv.to_dict(),
                "kept_image_tokens": pruned.kept_image_tokens,
                "language_flops": pruned.language,
                "total_flops": pruned.total,
                "language_ratio": pruned.language / baseline.language,
                "total_ratio": pruned.total / baseline.total,
                "analytic_language_flops": analytic,
                "paper_formula_ratio": paper / paper_baseline,
            }
        )
    return {
        "model": model,
        "image_tokens": image_tokens,
        "text_tokens": text_tokens,
        "flops_convention": "FLOPs = 2 x multiply-adds; prefill of one image, logits for the last position",
        "baseline": {
            "vision_flops": baseline.vision,
            "language_flops": baseline.language,
            "total_flops": baseline.total,
            "analytic_language_flops": 2 * fastv_prefill_macs(shape, tokens),
        },
        "settings": rows,
    }


def run(args: argparse.Namespace) -> int:
    result = flops_table(args.model, args.k, args.ratio, args.scoring, args.image_tokens, args.text_tokens)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    base = result["baseline"]
    table = Table(
        title=f"{result['model']}: prefill of {result['image_tokens']} image + {result['text_tokens']} text tokens"
    )
    for column in ("setting", "kept img", "LLM TFLOPs", "LLM ratio", "total TFLOPs", "total ratio", "paper formula"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row("unpruned", str(result["image_tokens"]), f"{base['language_flops'] / 1e12:.3f}", "1.000",
                  f"{base['total_flops'] / 1e12:.3f}", "1.000", "1.000")  # fmt: skip
    for row in result["settings"]:
        config = row["config"]
        table.add_row(
            f"K={config['k']} R={config['ratio']:g}",
            str(row["kept_image_tokens"]),
            f"{row['language_flops'] / 1e12:.3f}",
            f"{row['language_ratio']:.3f}",
            f"{row['total_flops'] / 1e12:.3f}",
            f"{row['total_ratio']:.3f}",
            f"{row['paper_formula_ratio']:.3f}",
        )
    console = Console()
    console.print(table)
    console.print(
        "FLOPs = 2 x multiply-adds. 'total' adds the vision tower and projector; 'paper formula' is FastV's "
        "4nd²+2n²d+2ndm per layer (arXiv 2403.06764 §4.3) on the language model."
    )
    return 0
