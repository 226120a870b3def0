"""``fastvision flops --backbone NAME [NAME ...]``: each backbone's parameters and MACs next to its paper's."""

from __future__ import annotations

import json
from typing import Any


def backbone_rows(names: list[str]) -> list[dict[str, Any]]:
    from fastvision.backbones import list_backbones
    from fastvision.flops.backbones import profile_backbone

    if names == ["all"]:
        names = list_backbones()
    return [profile_backbone(name) for name in names]


def _paper(row: dict[str, Any], key: str, scale: float) -> str:
    paper = row.get("paper")
    if paper is None or paper[key] is None:
        return "—"
    return f"{'≤' if paper['upper_bound'] else ''}{paper[key] / scale:.2f}"


def run_backbones(names: list[str], as_json: bool = False) -> int:
    rows = backbone_rows(names)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Backbones at their design input size (MACs = multiply-adds, deployed form)")
    for column in ("backbone", "input", "params (M)", "deployed (M)", "paper (M)", "GMACs", "paper GMACs", "ok"):
        table.add_column(column, justify="right", no_wrap=True)
    size = {"image": lambda shape: str(shape[-1]), "video": lambda shape: f"{shape[0]}x{shape[-1]}²",
            "skeleton": lambda shape: f"{shape[0]}x{shape[1]}x{shape[-1]}²"}  # fmt: skip
    for row in rows:
        table.add_row(
            row["backbone"], size[row["modality"]](row["input_size"]), f"{row['params'] / 1e6:.2f}",
            f"{row['deployed_params'] / 1e6:.2f}", _paper(row, "params", 1e6), f"{row['macs'] / 1e9:.3f}",
            _paper(row, "macs", 1e9), {True: "yes", False: "no", None: "—"}[row.get("within_budget")],
        )  # fmt: skip
    console = Console(width=max(Console().width, 110))
    console.print(table)
    for row in rows:
        note = row.get("paper", {}).get("note")
        if note and "paper_convention_macs" in row:
            console.print(f"{row['backbone']}: {note} ({row['paper_convention_macs'] / 1e9:.3f} GMACs that way).")
        elif note:
            console.print(f"{row['backbone']}: {note} ({row['macs_with_batchnorm'] / 1e9:.3f} GMACs with BatchNorm).")
    return 0
