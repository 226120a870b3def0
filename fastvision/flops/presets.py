"""Real-size VLM configs from public values, and their prefill FLOPs counted with no weights.

The model is built on the ``meta`` device, so a 13B LLaVA costs no memory and no compute: FlopCounterMode reads the
shapes. The multimodal merge needs real values (LLaVA checks the placeholder count with ``.item()``), so the vision
tower and the language model are run as two measured calls; the language model runs inside the engine's
:meth:`~fastvision.fastv.engine.FastVEngine.prefill` context with a real visual-token mask.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastvision.fastv.config import FastVConfig
from fastvision.flops.counter import measure_flops

# Public config values (llava-hf/llava-1.5-{7b,13b}-hf, Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct
# config.json on the Hub).
_CLIP_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
}
_LLAVA_TEXT = {
    "llava-1.5-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "llava-1.5-13b": {
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
    },
}
_QWEN_TEXT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
}
# Qwen's default processor turns a 448x448 image into a 32x32 patch grid, merged 2x2 into 256 tokens.
QWEN_IMAGE_TOKENS = 256


def _llava_preset(name: str) -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    text = LlamaConfig(vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5, **_LLAVA_TEXT[name])
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**_CLIP_L14_336),
        text_config=text,
        image_token_id=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def _qwen2_vl_7b() -> Any:
    from transformers import Qwen2VLConfig

    vision = {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
    return Qwen2VLConfig(text_config=_QWEN_TEXT, vision_config=vision, image_token_id=151655, video_token_id=151656)


def _qwen2_5_vl_7b() -> Any:
    from transformers import Qwen2_5_VLConfig

    vision = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
              "fullatt_block_indexes": [7, 15, 23, 31]}  # fmt: skip
    return Qwen2_5_VLConfig(text_config=_QWEN_TEXT, vision_config=vision, image_token_id=151655, video_token_id=151656)


PRESETS: dict[str, Callable[[], Any]] = {
    "llava-1.5-7b": lambda: _llava_preset("llava-1.5-7b"),
    "llava-1.5-13b": lambda: _llava_preset("llava-1.5-13b"),
    "qwen2-vl-7b": _qwen2_vl_7b,
    "qwen2.5-vl-7b": _qwen2_5_vl_7b,
}


def preset_config(name: str) -> Any:
    if name not in PRESETS:
        raise ValueError(f"Unknown FLOPs preset {name!r}; presets: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]()


def load_config(name_or_path: str) -> Any:
    """A preset name, a local ``config.json`` (or a folder holding one), or a Hub id (needs network)."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if name_or_path in PRESETS:
        return preset_config(name_or_path)
    path = Path(name_or_path)
    if path.is_file():
        data = json.loads(path.read_text())
        if "model_type" not in data:
            raise ValueError(f"{path} has no 'model_type'; it is not a transformers config.json.")
        return CONFIG_MAPPING[data["model_type"]].from_dict(data)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        raise ValueError(
            f"Cannot load a config from {name_or_path!r}: not a preset ({', '.join(sorted(PRESETS))}), not a local "
            f"config.json or folder, and the Hub could not be reached or has no such model ({error})."
        ) from error


def image_tokens_of(config: Any) -> int:
    """Placeholder tokens of one default-size image: the CLIP grid for LLaVA, a 448x448 image for Qwen-VL."""
    if config.model_type != "llava":
        return QWEN_IMAGE_TOKENS
    vision = config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2
    return tokens if config.vision_feature_select_strategy == "default" else tokens + 1


@dataclass(frozen=True)
class PrefillFlops:
    """FLOPs (2 per multiply-add) of one single-image prefill: the vision side (None where it is not counted, see
    :func:`count_prefill_flops`) and the language model with its LM head."""

    vision: int | None
    language: int
    kept_image_tokens: int

    @property
    def total(self) -> int | None:
        return None if self.vision is None else self.vision + self.language


def count_prefill_flops(
    config: Any, *, image_tokens: int | None = None, text_tokens: int = 60, fastv: FastVConfig | None = None
) -> PrefillFlops:
    """Measure a prefill of ``config`` on the meta device: one image plus ``text_tokens`` text tokens.

    The language model projects logits for the last position only, as ``generate``'s prefill does. The vision side is
    counted for LLaVA (CLIP tower and projector). Qwen-VL vision towers derive positions from the image grid's values,
    which meta tensors do not hold, so there only the language model is counted; the vision cost is the same with and
    without FastV.
    """
    from transformers import AutoModelForImageTextToText

    from fastvision.api import patch
    from fastvision.handle import get_handle
    from fastvision.registry import adapter_for

    image_tokens = image_tokens_of(config) if image_tokens is None else image_tokens
    if image_tokens < 0 or text_tokens < 1:
        raise ValueError(f"Need image_tokens >= 0 and text_tokens >= 1, got {image_tokens} and {text_tokens}.")
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config).eval()
    adapter = adapter_for(model)
    vision = None
    if config.model_type == "llava":
        size = config.vision_config.image_size
        pixels = torch.empty(1, 3, size, size, device="meta")
        with torch.no_grad():
            report, _ = measure_flops(lambda: model.model.get_image_features(pixel_values=pixels, return_dict=True))
        vision = report.total
    prunable = torch.zeros(1, image_tokens + text_tokens, dtype=torch.bool)
    prunable[0, 1 : 1 + image_tokens] = True  # BOS, the image, then the text
    embeds = torch.empty(1, prunable.shape[1], adapter.text_config(model).hidden_size, device="meta")
    language_model = adapter.language_model(model)

    def language() -> Any:
        # use_cache keeps transformers from inspecting position ids for packed sequences (a value read)
        hidden = language_model(inputs_embeds=embeds, use_cache=True).last_hidden_state
        return model.lm_head(hidden[:, -1:])

    kept = image_tokens
    with torch.no_grad():
        if fastv is None:
            report, _ = measure_flops(language)
        else:
            engine = get_handle(patch(model, fastv)).engine
            with engine.prefill(prunable):
                report, _ = measure_flops(language)
            kept = fastv.kept_counts(image_tokens)[-1]  # the engine's rule; meta tensors hold no values
    return PrefillFlops(vision=vision, language=report.total, kept_image_tokens=kept)
