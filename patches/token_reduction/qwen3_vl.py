"""Qwen3-VL (Qwen Team, 2025) in transformers.

Qwen3-VL injects "deepstack" visual features into the hidden states of its first ``len(deepstack_visual_indexes)``
decoder layers at the visual positions, with full-length masks. Pruning before those layers would drop positions the
injection still writes to, so ``k`` (every stage's layer) must be at least the deepstack depth.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class Qwen3VLAdapter(VLMAdapter):
    model_types = ("qwen3_vl",)
    family = "Qwen3-VL"
    text_backbones = ("qwen3_vl_text",)

    def check_config(self, model: nn.Module, config: Any) -> None:
        super().check_config(model, config)
        depth = len(model.config.vision_config.deepstack_visual_indexes)
        if config.k < depth:
            label = type(config).__name__.removesuffix("Config")
            where = "prunes before the language model (k=0)" if config.k == 0 else f"got k={config.k}"
            raise ValueError(
                f"Qwen3-VL injects deepstack features into its first {depth} layers, so {label} needs k >= {depth}; "
                f"{where}. Use a method that prunes after them (FastV or DART with k >= {depth})."
            )


register_adapter(Qwen3VLAdapter())
