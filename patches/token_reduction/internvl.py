"""InternVL 2.5 / 3 (Chen et al., arXiv 2412.05271; Zhu et al., arXiv 2504.10479) in transformers.

InternViT features are pixel-shuffled and projected into ``image_token_id`` placeholders of a Qwen2 language model;
the language model is called as in LLaVA.
"""

from __future__ import annotations

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class InternVLAdapter(VLMAdapter):
    model_types = ("internvl",)
    family = "InternVL"
    text_backbones = ("qwen2",)


register_adapter(InternVLAdapter())
