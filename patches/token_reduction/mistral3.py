"""Mistral 3 / Mistral Small 3.1 vision (Pixtral encoder, patch-merger projector, Mistral text) in transformers.

Images of any size give ``(h/patch/merge) x (w/patch/merge)`` placeholder tokens (with break tokens between rows, which
are ordinary text tokens and never pruned); the language model is called as in LLaVA.
"""

from __future__ import annotations

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class Mistral3Adapter(VLMAdapter):
    model_types = ("mistral3",)
    family = "Mistral3"
    text_backbones = ("mistral",)


register_adapter(Mistral3Adapter())
