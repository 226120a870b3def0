"""Randomly initialised VLMs built from configs of the real transformers classes, for tests and benchmarks.

No weights are downloaded: tests and benchmarks run offline on these. ``tiny_llava`` gives a model small enough for
unit tests; ``llava_shaped`` gives the mid-size LLaVA shape used by the prefill benchmark.
"""

from __future__ import annotations

from typing import Any

import torch

IMAGE_TOKEN_ID = 99
TINY_TEXT: dict[str, int] = {  # a 4-layer text model with grouped KV heads: small, but every code path is real
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 512,
}


def _text_config(backbone: str, **overrides: Any) -> Any:
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    classes = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
    if backbone not in classes:
        raise ValueError(f"Unknown text backbone {backbone!r}; choose from {sorted(classes)}.")
    settings: dict[str, Any] = dict(TINY_TEXT)
    if backbone == "mistral":
        settings["sliding_window"] = None
    settings.update(overrides)
    return classes[backbone](**settings)


def tiny_llava(
    backbone: str = "llama",
    *,
    image_size: int = 32,
    patch_size: int = 8,
    attn_implementation: str = "sdpa",
    seed: int = 0,
    **text_overrides: Any,
) -> Any:
    """A tiny ``LlavaForConditionalGeneration`` with a CLIP vision tower ((image_size/patch_size)**2 image tokens)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(backbone, **text_overrides),
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # Random init gives near-uniform logits; larger embeddings make them peaked, so greedy tokens are not near-ties.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)
    return model


def image_tokens_per_image(model: Any) -> int:
    vision = model.config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def llava_prompt(model: Any, prefix: list[int], suffix: list[int], images: int = 1) -> list[int]:
    """Token ids ``prefix + <image>*n + suffix`` for ``images`` images."""
    return [*prefix, *([IMAGE_TOKEN_ID] * image_tokens_per_image(model) * images), *suffix]


def tiny_llava_with_one_image() -> tuple[Any, dict[str, torch.Tensor]]:
    """A tiny LLaMA-based LLaVA in eval mode and one prompt ``[5, 6] + <image>*n + [7, 8, 9]`` with random pixels."""
    model = tiny_llava("llama").eval()
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8, 9])])
    return model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)}


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (input_ids, attention_mask)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row)
        mask[index, width - len(row) :] = 1
    return ids, mask


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding, as ``generate`` builds them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def llava_shaped(
    *, hidden_size: int = 1024, layers: int = 12, heads: int = 16, image_size: int = 336, patch_size: int = 14
) -> Any:
    """A random LLaVA-1.5-shaped model: LLaMA text of the given size and a small CLIP tower with 576 image tokens."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=int(hidden_size * 2.6875),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=32064,
        max_position_embeddings=4096,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval()
