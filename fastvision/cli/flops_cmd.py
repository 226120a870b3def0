"""``fastvision flops``: prefill FLOPs of a real-size VLM config, unpruned and with FastV, counted with no weights."""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

from fastvision.fastv.config import FastVConfig


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="Prefill FLOPs of a VLM config with and without FastV (no weights needed).",
        description="Count prefill FLOPs (FlopCounterMode on the meta device) of a preset (llava-1.5-7b, "
        "llava-1.5-13b, qwen2-vl-7b, qwen2.5-vl-7b), a local config.json, or a Hub id, unpruned and with FastV.",
    )
    parser.add_argument("model", nargs="?", help="preset name, path to a config.json (or its folder), or a Hub id")
    parser.add_argument(
        "--backbone",
        nargs="+",
        metavar="NAME",
        help="params and MACs of bundled backbones against their papers instead ('all' for every one)",
    )
    parser.add_argument("--k", type=int, default=2, help="FastV layer K (default 2)")
    parser.add_argument("--ratio", type=float, nargs="+", default=[0.5], help="one or more ratios (default 0.5)")
    parser.add_argument("--scoring", default="last", choices=["last", "mean"])
    parser.add_argument(
        "--schedule",
        nargs="+",
        metavar="LAYER:RATIO",
        help="multi-stage drops instead of --k/--ratio, e.g. --schedule 2:0.5 16:0.5",
    )
    parser.add_argument("--image-tokens", type=int, default=None, help="default: the vision tower's token count")
    parser.add_argument("--text-tokens", type=int, default=60)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    uvit = parser.add_argument_group(
        "U-ViT presets (uvit-s2-coco; unidiffuser-v1, diffusers' UTransformer2DModel): intermediate fusion "
        "instead of FastV"
    )
    uvit.add_argument("--fusion", default="intermediate", choices=["intermediate"])
    uvit.add_argument("--v", type=int, default=0, help="image-only blocks at each end (default 0)")
    uvit.add_argument("--c", type=int, default=0, help="text-only blocks (default 0)")
    uvit.add_argument("--conditioning", default="concat", choices=["concat", "cross"])
    parser.set_defaults(run=run)


def parse_schedule(items: list[str]) -> list[tuple[int, float]]:
    stages = []
    for item in items:
        layer, _, ratio = item.partition(":")
        try:
            stages.append((int(layer), float(ratio)))
        except ValueError:
            raise ValueError(f"--schedule entries are LAYER:RATIO such as 2:0.5; got {item!r}.") from None
    return stages


def flops_table(
    model: str,
    configs: list[FastVConfig],
    image_tokens: int | None,
    text_tokens: int,
) -> dict[str, Any]:
    """Baseline and pruned prefill FLOPs of ``model`` for each FastV config, with the analytic cross-check."""
    from fastvision.flops.analytic import DecoderShape, fastv_paper_macs, fastv_prefill_macs
    from fastvision.flops.presets import count_prefill_flops, image_tokens_of, load_config
    from fastvision.registry import supported_model_types

    config = load_config(model)
    if config.model_type not in supported_model_types():
        raise ValueError(f"{model!r} has model_type={config.model_type!r}, which fastvision does not patch.")
    layers = config.text_config.num_hidden_layers
    for fastv in configs:
        if fastv.stages[-1][0] >= layers:
            raise ValueError(f"k={fastv.stages[-1][0]} is out of range: allowed is 1 <= k < {layers}.")
    image_tokens = image_tokens_of(config) if image_tokens is None else image_tokens
    tokens = image_tokens + text_tokens
    shape = DecoderShape.from_config(config.text_config)
    baseline = count_prefill_flops(config, image_tokens=image_tokens, text_tokens=text_tokens)
    paper_baseline = fastv_paper_macs(shape.hidden, shape.ffn, shape.layers, tokens)
    rows = []
    for fastv in configs:
        pruned = count_prefill_flops(config, image_tokens=image_tokens, text_tokens=text_tokens, fastv=fastv)
        counts = [text_tokens + kept for kept in fastv.kept_counts(image_tokens)]
        stages = [(layer, count) for (layer, _), count in zip(fastv.stages, counts, strict=True)]
        paper = sum(  # FastV's formula, extended stage by stage
            fastv_paper_macs(shape.hidden, shape.ffn, stop - start, count)
            for (start, stop), count in zip(
                itertools.pairwise([0, *[layer for layer, _ in stages], shape.layers]), [tokens, *counts], strict=True
            )
        )
        rows.append(
            {
                "config": fastv.to_dict(),
                "kept_image_tokens": pruned.kept_image_tokens,
                "language_flops": pruned.language,
                "total_flops": pruned.total,
                "language_ratio": pruned.language / baseline.language,
                "total_ratio": None if baseline.total is None else pruned.total / baseline.total,
                "analytic_language_flops": 2 * fastv_prefill_macs(shape, tokens, stages=stages, scoring=fastv.scoring),
                "paper_formula_ratio": paper / paper_baseline,
            }
        )
    return {
        "model": model,
        "image_tokens": image_tokens,
        "text_tokens": text_tokens,
        "flops_convention": "FLOPs = 2 x multiply-adds; prefill of one image, logits for the last position",
        "vision_counted": baseline.vision is not None,
        "baseline": {
            "vision_flops": baseline.vision,
            "language_flops": baseline.language,
            "total_flops": baseline.total,
            "analytic_language_flops": 2 * fastv_prefill_macs(shape, tokens),
        },
        "settings": rows,
    }


def _tflops(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e12:.3f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    from fastvision.flops.diffusers_uvit import DIFFUSERS_UVIT_PRESETS
    from fastvision.uvit import UVIT_PRESETS

    if args.backbone:
        from fastvision.cli.flops_backbone import run_backbones

        return run_backbones(args.backbone, as_json=args.json)
    if args.model is None:
        raise ValueError("give a model (preset, config path or Hub id) or --backbone NAME")
    if args.model in UVIT_PRESETS or args.model in DIFFUSERS_UVIT_PRESETS:
        return run_uvit(args)
    if args.schedule:
        configs = [FastVConfig(schedule=parse_schedule(args.schedule), scoring=args.scoring)]
    else:
        configs = [FastVConfig(k=args.k, ratio=ratio, scoring=args.scoring) for ratio in args.ratio]
    result = flops_table(args.model, configs, args.image_tokens, args.text_tokens)
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
    base_total = None if base["total_flops"] is None else 1.0
    table.add_row("unpruned", str(result["image_tokens"]), _tflops(base["language_flops"]), "1.000",
                  _tflops(base["total_flops"]), _ratio(base_total), "1.000")  # fmt: skip
    for row in result["settings"]:
        config = row["config"]
        if config["schedule"] is None:
            setting = f"K={config['k']} R={config['ratio']:g}"
        else:
            setting = " ".join(f"{layer}:{ratio:g}" for layer, ratio in config["schedule"])
        table.add_row(
            setting,
            str(row["kept_image_tokens"]),
            _tflops(row["language_flops"]),
            _ratio(row["language_ratio"]),
            _tflops(row["total_flops"]),
            _ratio(row["total_ratio"]),
            _ratio(row["paper_formula_ratio"]),
        )
    console = Console(width=max(Console().width, 110))  # keep the table readable in pipes and logs
    console.print(table)
    note = "FLOPs = 2 x multiply-adds. 'total' adds the vision tower and projector"
    if not result["vision_counted"]:
        note += " (not counted for this family: its vision tower needs real image-grid values)"
    console.print(
        note + "; 'paper formula' is FastV's 4nd²+2n²d+2ndm per layer (arXiv 2403.06764 §4.3) on the language model."
    )
    return 0


def run_uvit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fastvision.flops.diffusers_uvit import DIFFUSERS_UVIT_PRESETS, utransformer_flops_table
    from fastvision.flops.uvit import uvit_flops_table

    if args.schedule:
        raise ValueError(f"--schedule is a FastV option; {args.model} is a U-ViT (use --v, --c, --conditioning).")
    fusion = {"fusion": args.fusion, "v": args.v, "c": args.c, "conditioning": args.conditioning}
    table_of = utransformer_flops_table if args.model in DIFFUSERS_UVIT_PRESETS else uvit_flops_table
    result = table_of(args.model, fusion)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"{args.model}: one forward, {result['text_tokens']} text tokens")
    for column in ("fusion", "params (M)", "GFLOPs", "vs early concat"):
        table.add_column(column, justify="right", no_wrap=True)
    early, patched = result["early_fusion"], result["fusion"]
    table.add_row("early, concat (unpatched)", f"{early['parameters'] / 1e6:.2f}", f"{early['flops'] / 1e9:.2f}", "—")
    table.add_row(
        f"{args.conditioning} c{args.c} v{args.v}",
        f"{patched['parameters'] / 1e6:.2f}",
        f"{patched['flops'] / 1e9:.2f}",
        f"{100 * (patched['flops_ratio'] - 1):+.1f}%",
    )
    Console(width=max(Console().width, 90)).print(table)
    return 0
