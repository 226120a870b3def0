"""LLaVA-NeXT (Liu et al., 2024, "LLaVA-NeXT: Improved reasoning, OCR, and world knowledge"), LLaVA-NeXT-Video and
LLaVA-OneVision (Li et al., arXiv 2408.03326) in transformers.

AnyRes tiling makes the image-token count differ per image (crops plus one ``image_newline`` per row, all under the
``image_token_id`` placeholder); the video models add ``video_token_id`` placeholders. The language model is called
exactly as in LLaVA, so only the registration differs.
"""

from __future__ import annotations

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class LlavaNextAdapter(VLMAdapter):
    model_types = ("llava_next",)
    family = "LLaVA-NeXT"
    text_backbones = ("llama", "qwen2", "mistral")


class LlavaNextVideoAdapter(VLMAdapter):
    model_types = ("llava_next_video",)
    family = "LLaVA-NeXT-Video"
    text_backbones = ("llama", "qwen2", "mistral")


class LlavaOnevisionAdapter(VLMAdapter):
    model_types = ("llava_onevision",)
    family = "LLaVA-OneVision"
    text_backbones = ("llama", "qwen2", "mistral")


for adapter in (LlavaNextAdapter(), LlavaNextVideoAdapter(), LlavaOnevisionAdapter()):
    register_adapter(adapter)
