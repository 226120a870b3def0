"""Gemma 3 (Gemma Team, arXiv 2503.19786) in transformers.

Gemma 3 interleaves sliding-window and full-attention layers, each with its own RoPE table and mask; the engine
gathers each object once per forward (memoized per original object), so both layer types see the kept tokens with
their original positions and patterns. Sequences longer than the sliding window are refused (see the engine).
"""

from __future__ import annotations

import math

from torch import nn

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class Gemma3Adapter(VLMAdapter):
    model_types = ("gemma3",)
    family = "Gemma3"
    text_backbones = ("gemma3_text",)

    def image_grid(self, model: nn.Module) -> tuple[int, int] | None:
        """The pooled SigLIP grid: ``mm_tokens_per_image`` tokens per image (or pan-and-scan crop), a square."""
        tokens = int(model.config.mm_tokens_per_image)
        side = math.isqrt(tokens)
        return (side, side) if side * side == tokens else None


register_adapter(Gemma3Adapter())
