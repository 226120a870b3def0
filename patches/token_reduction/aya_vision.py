"""Aya Vision (Cohere For AI, arXiv 2505.08751) in transformers: SigLIP features, pixel-shuffle projector and a
Cohere2 language model with interleaved sliding-window layers, called as in LLaVA.
"""

from __future__ import annotations

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class AyaVisionAdapter(VLMAdapter):
    model_types = ("aya_vision",)
    family = "Aya Vision"
    text_backbones = ("cohere2",)


register_adapter(AyaVisionAdapter())
