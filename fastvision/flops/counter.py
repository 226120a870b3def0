"""Measured FLOPs through ``torch.utils.flop_counter.FlopCounterMode``, with a per-module breakdown.

FlopCounterMode sees the real shapes of every matmul, so it counts the shorter sequences after pruning without any
model-specific code. On CPU it counts 0 FLOPs for SDPA, because CPU SDPA dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu``, which torch does not register; this module
registers it (forward and backward) with torch's own SDPA formula. FlopCounterMode counts 2 FLOPs per multiply-add.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

_aten = torch.ops.aten


def register_cpu_sdpa_flops() -> None:
    """Teach FlopCounterMode the CPU flash-attention kernels (idempotent)."""
    forward = _aten._scaled_dot_product_flash_attention_for_cpu
    backward = _aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward.default not in flop_registry:

        @register_flop_formula(forward)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)

    if backward.default not in flop_registry:

        @register_flop_formula(backward)
        def _cpu_sdpa_backward(
            grad_out_shape, query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any
        ) -> int:
            return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


register_cpu_sdpa_flops()


@dataclass
class FlopReport:
    """FLOPs of one measured call (2 per multiply-add) and the same split by module."""

    total: int
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.total // 2

    def module(self, prefix: str) -> int:
        """FLOPs spent inside the module with qualified name ``prefix`` (0 if it did no counted work)."""
        return self.by_module.get(prefix, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.total, "macs": self.macs, "by_module": dict(self.by_module)}


def measure_flops(fn: Callable[[], Any]) -> tuple[FlopReport, Any]:
    """Run ``fn()`` under FlopCounterMode; return its FLOPs report and its result.

    Module names are qualified names relative to the outermost module that ran (e.g. ``model.language_model``).
    """
    with FlopCounterMode(display=False) as counter:
        result = fn()
    counts = counter.get_flop_counts()
    total = sum(counts.get("Global", {}).values())
    by_module: dict[str, int] = {}
    for name, ops in counts.items():
        if name == "Global":
            continue
        _, _, relative = name.partition(".")
        by_module[relative] = by_module.get(relative, 0) + sum(ops.values())
    return FlopReport(total, by_module), result
