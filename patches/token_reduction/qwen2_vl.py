"""Qwen2-VL (Wang et al., arXiv 2409.12191) and Qwen2.5-VL (Bai et al., arXiv 2502.13923) in transformers.

M-RoPE's 3-D (temporal, height, width) position ids are folded into ordinary per-token ``(cos, sin)`` before the
decoder loop, so kept tokens carry their original rotary phases once the engine gathers cos/sin along the sequence
(``fastvision.fastv.engine``). Decode steps derive positions from layer 0's cache length plus ``rope_deltas``;
layer 0's cache always spans the prompt (``fastvision.fastv.layer_zero`` keeps it so when layer 0 is pruned too), so
they stay right. Image and video placeholders are both prunable.
"""

from __future__ import annotations

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class Qwen2VLAdapter(VLMAdapter):
    model_types = ("qwen2_vl",)
    family = "Qwen2-VL"
    text_backbones = ("qwen2_vl_text",)


class Qwen25VLAdapter(VLMAdapter):
    model_types = ("qwen2_5_vl",)
    family = "Qwen2.5-VL"
    text_backbones = ("qwen2_5_vl_text",)


for adapter in (Qwen2VLAdapter(), Qwen25VLAdapter()):
    register_adapter(adapter)
