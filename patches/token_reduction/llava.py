"""LLaVA (Liu et al., arXiv 2304.08485; LLaVA-1.5, arXiv 2310.03744) in transformers' ``LlavaForConditionalGeneration``.

``LlavaModel.forward`` scatters the projected CLIP features into the ``image_token_id`` placeholders and then runs
``language_model`` (a LLaMA, Qwen2 or Mistral decoder), so the engine's default layout applies as it is.
"""

from __future__ import annotations

from torch import nn

from fastvision.fastv.adapter import VLMAdapter
from fastvision.registry import register_adapter


class LlavaAdapter(VLMAdapter):
    model_types = ("llava",)
    family = "LLaVA"
    text_backbones = ("llama", "qwen2", "mistral")

    def image_grid(self, model: nn.Module) -> tuple[int, int] | None:
        """The CLIP patch grid (``image_size / patch_size`` a side); None when the CLS token is kept ("full")."""
        if model.config.vision_feature_select_strategy != "default":
            return None
        vision = model.config.vision_config
        side = vision.image_size // vision.patch_size
        return side, side


register_adapter(LlavaAdapter())
