"""Tiny configs of the real transformers classes of every supported VLM family, and batched inputs for them.

Each family says how to build a model and the vision inputs of one image (or video); the number of placeholder
tokens an image needs is read from the model's own feature extractor, so prompts are always consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fastvision.testing import TINY_TEXT

TEXT = TINY_TEXT
CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 16,
    "patch_size": 4,
    "projection_dim": 32,
}
IMAGE, VIDEO = 100, 101
SEPARATOR = 11
MROPE = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}


@dataclass
class Family:
    """How to build one family's tiny model and the vision inputs of one image or video."""

    name: str
    build: Callable[[], Any]
    image: Callable[[torch.Generator], dict[str, torch.Tensor]]
    video: Callable[[torch.Generator], dict[str, torch.Tensor]] | None = None
    features: Callable[[Any, dict[str, torch.Tensor]], int] = field(default=lambda model, inputs: 0)
    video_features: Callable[[Any, dict[str, torch.Tensor]], int] | None = None  # default: the model's video tower
    token_types: str | None = (
        None  # input name of per-token modality ids: Qwen-VL's or Gemma 3's (bidirectional images)
    )

    def make(self) -> Any:
        """The tiny model, with the same weights whatever ran before."""
        torch.manual_seed(0)
        return self.build()


def _finish(model: Any) -> Any:
    model.eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)  # peaked logits: greedy tokens are not near-ties
    return model


def _clip_features(model: Any, inputs: dict[str, torch.Tensor]) -> int:
    features = model.model.get_image_features(**inputs, return_dict=True).pooler_output
    return int(features[0].shape[0])


def _llava() -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**CLIP),
        text_config=LlamaConfig(**TEXT),
        image_token_id=IMAGE,
        vision_feature_layer=-1,
    )
    return _finish(LlavaForConditionalGeneration(config))


def _llava_next() -> Any:
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, MistralConfig

    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**CLIP),
        text_config=MistralConfig(**TEXT, sliding_window=None),
        image_token_index=IMAGE,
        vision_feature_layer=-1,
        image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
    )
    return _finish(LlavaNextForConditionalGeneration(config))


def _anyres_image(generator: torch.Generator, size: tuple[int, int] = (20, 30), patches: int = 5) -> dict:
    return {
        "pixel_values": torch.randn(1, patches, 3, 16, 16, generator=generator),
        "image_sizes": torch.tensor([list(size)]),
    }


def _anyres_features(model: Any, inputs: dict[str, torch.Tensor]) -> int:
    return _clip_features(model, {"pixel_values": inputs["pixel_values"], "image_sizes": inputs["image_sizes"]})


def _llava_onevision() -> Any:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    siglip = {k: v for k, v in CLIP.items() if k != "projection_dim"}
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**siglip),
        text_config=Qwen2Config(**TEXT),
        image_token_index=IMAGE,
        video_token_index=VIDEO,
        vision_feature_layer=-1,
        image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
    )
    return _finish(LlavaOnevisionForConditionalGeneration(config))


def _video_clip(generator: torch.Generator) -> dict:
    return {"pixel_values_videos": torch.randn(1, 2, 3, 16, 16, generator=generator)}


def _llava_next_video() -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    config = LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(**CLIP),
        text_config=LlamaConfig(**TEXT),
        image_token_index=IMAGE,
        video_token_index=VIDEO,
        vision_feature_layer=-1,
        image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
        spatial_pool_stride=1,
    )
    return _finish(LlavaNextVideoForConditionalGeneration(config))


def _qwen_vision(embed: int = 32) -> dict:
    return {"depth": 2, "embed_dim": embed, "hidden_size": 64, "num_heads": 4, "patch_size": 4, "spatial_merge_size": 2}


def _qwen2_vl() -> Any:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = {**TEXT, "bos_token_id": None, "eos_token_id": None, "rope_parameters": MROPE}
    config = Qwen2VLConfig(
        text_config=text, vision_config=_qwen_vision(), image_token_id=IMAGE, video_token_id=VIDEO,
        vision_start_token_id=102, vision_end_token_id=103,
    )  # fmt: skip
    return _finish(Qwen2VLForConditionalGeneration(config))


def _qwen2_5_vl() -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {**TEXT, "bos_token_id": None, "eos_token_id": None, "rope_parameters": MROPE}
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64, "num_heads": 4,
              "patch_size": 4, "spatial_merge_size": 2, "window_size": 16, "fullatt_block_indexes": [1]}  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
        vision_start_token_id=102, vision_end_token_id=103,
    )  # fmt: skip
    return _finish(Qwen2_5_VLForConditionalGeneration(config))


def _qwen_image(generator: torch.Generator, grid: tuple[int, int, int] = (1, 8, 8)) -> dict:
    t, h, w = grid
    return {
        "pixel_values": torch.randn(t * h * w, 3 * 2 * 4 * 4, generator=generator),
        "image_grid_thw": torch.tensor([list(grid)]),
    }


def _qwen_video(generator: torch.Generator, grid: tuple[int, int, int] = (2, 4, 4)) -> dict:
    t, h, w = grid
    return {
        "pixel_values_videos": torch.randn(t * h * w, 3 * 2 * 4 * 4, generator=generator),
        "video_grid_thw": torch.tensor([list(grid)]),
    }


def _qwen_features(model: Any, inputs: dict[str, torch.Tensor]) -> int:
    grid = inputs.get("image_grid_thw", inputs.get("video_grid_thw"))
    return int(grid.prod()) // model.config.vision_config.spatial_merge_size**2


def _small_vision(config_class: Any, **extra: Any) -> Any:
    return config_class(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=4,
        **extra,
    )  # fmt: skip


def _mistral3() -> Any:
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    config = Mistral3Config(
        vision_config=_small_vision(PixtralVisionConfig, head_dim=8),
        text_config=MistralConfig(**TEXT, sliding_window=None),
        image_token_index=IMAGE,
        vision_feature_layer=-1,
    )
    return _finish(Mistral3ForConditionalGeneration(config))


def _internvl() -> Any:
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=[32, 32],
        patch_size=[4, 4],
    )  # fmt: skip
    config = InternVLConfig(
        vision_config=vision, text_config=Qwen2Config(**TEXT), image_token_id=IMAGE, vision_feature_layer=-1
    )
    return _finish(InternVLForConditionalGeneration(config))


def _gemma3() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    layers = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    text = Gemma3TextConfig(**{**TEXT, "head_dim": 16}, sliding_window=512, layer_types=layers)
    config = Gemma3Config(
        vision_config=_small_vision(SiglipVisionConfig), text_config=text, image_token_index=IMAGE,
        mm_tokens_per_image=16, boi_token_index=102, eoi_token_index=103,
    )  # fmt: skip
    return _finish(Gemma3ForConditionalGeneration(config))


def _aya_vision() -> Any:
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, Cohere2Config, SiglipVisionConfig

    config = AyaVisionConfig(
        vision_config=_small_vision(SiglipVisionConfig), text_config=Cohere2Config(**TEXT, sliding_window=512),
        image_token_index=IMAGE, downsample_factor=2, vision_feature_layer=-1,
    )  # fmt: skip
    return _finish(AyaVisionForConditionalGeneration(config))


def _qwen3_vl() -> Any:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    rope = {**MROPE, "mrope_interleaved": True}
    text = {**TEXT, "head_dim": 16, "bos_token_id": None, "eos_token_id": None, "rope_parameters": rope}
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64, "num_heads": 4,
              "patch_size": 4, "spatial_merge_size": 2, "deepstack_visual_indexes": [0, 1],
              "num_position_embeddings": 64}  # fmt: skip
    config = Qwen3VLConfig(
        text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
        vision_start_token_id=102, vision_end_token_id=103,
    )  # fmt: skip
    return _finish(Qwen3VLForConditionalGeneration(config))


def _square_image(generator: torch.Generator) -> dict:
    return {"pixel_values": torch.randn(1, 3, 32, 32, generator=generator)}


def _pixtral_image(generator: torch.Generator) -> dict:
    return {"pixel_values": torch.randn(1, 3, 32, 32, generator=generator), "image_sizes": torch.tensor([[32, 32]])}


def _flat_features(model: Any, inputs: dict[str, torch.Tensor]) -> int:
    features = model.model.get_image_features(**inputs, return_dict=True).pooler_output
    if isinstance(features, (list, tuple)):
        return int(features[0].shape[0])
    return int(features.reshape(inputs["pixel_values"].shape[0], -1, features.shape[-1]).shape[1])


FAMILIES: dict[str, Family] = {
    "llava": Family("llava", _llava, lambda g: {"pixel_values": torch.randn(1, 3, 16, 16, generator=g)},
                    features=_clip_features),
    "llava_next": Family("llava_next", _llava_next, _anyres_image, features=_anyres_features),
    "llava_onevision": Family("llava_onevision", _llava_onevision, _anyres_image, _video_clip,
                              features=_anyres_features),
    "llava_next_video": Family("llava_next_video", _llava_next_video, _anyres_image, _video_clip,
                               features=_anyres_features),
    "qwen2_vl": Family("qwen2_vl", _qwen2_vl, _qwen_image, _qwen_video, features=_qwen_features,
                       video_features=_qwen_features, token_types="mm_token_type_ids"),
    "qwen2_5_vl": Family("qwen2_5_vl", _qwen2_5_vl, _qwen_image, _qwen_video, features=_qwen_features,
                         video_features=_qwen_features, token_types="mm_token_type_ids"),
    "qwen3_vl": Family("qwen3_vl", _qwen3_vl, _qwen_image, features=_qwen_features,
                       token_types="mm_token_type_ids"),
    "mistral3": Family("mistral3", _mistral3, _pixtral_image, features=_flat_features),
    "internvl": Family("internvl", _internvl, _square_image, features=_flat_features),
    "gemma3": Family("gemma3", _gemma3, _square_image, features=_flat_features, token_types="token_type_ids"),
    "aya_vision": Family("aya_vision", _aya_vision, _square_image, features=_flat_features),
}  # fmt: skip


def _video_features(model: Any, inputs: dict[str, torch.Tensor]) -> int:
    features = model.model.get_video_features(**inputs, return_dict=True).pooler_output
    if isinstance(features, (list, tuple)):  # one tensor per video, (frames, tokens, dim) before transformers 5.20
        return int(sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features))
    return int(features.reshape(-1, features.shape[-1]).shape[0])


def media_tokens(family: Family, model: Any, kind: str, inputs: dict[str, torch.Tensor]) -> int:
    """How many placeholder tokens one image or video needs in this family."""
    if kind == "video":
        return (family.video_features or _video_features)(model, inputs)
    return family.features(model, inputs)


Row = tuple[list[int], list[str], list[int]]


def batch(family: Family, model: Any, rows: list[Row], seeds: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Left-padded inputs for rows of (prefix ids, media kinds such as ["image", "video"], suffix ids).

    Row ``i`` draws its media from a generator seeded with ``seeds[i]`` (default ``i``), so a row built alone with
    the same seed gets the same pixels as in a batch.
    """
    seeds = list(range(len(rows))) if seeds is None else seeds
    token_rows, type_rows, media = [], [], {}
    for (prefix, kinds, suffix), seed in zip(rows, seeds, strict=True):
        generator = torch.Generator().manual_seed(seed)
        ids, types = list(prefix), [0] * len(prefix)
        for number, kind in enumerate(kinds):
            if number:  # a text token between media, as processors put vision start/end tokens there
                ids, types = [*ids, SEPARATOR], [*types, 0]
            inputs = (family.image if kind == "image" else family.video)(generator)
            count = media_tokens(family, model, kind, inputs)
            ids += [IMAGE if kind == "image" else VIDEO] * count
            types += [1 if kind == "image" else 2] * count
            for key, value in inputs.items():
                media.setdefault(key, []).append(value)
        token_rows.append(ids + list(suffix))
        type_rows.append(types + [0] * len(suffix))
    width = max(len(row) for row in token_rows)
    out = {
        "input_ids": torch.zeros(len(rows), width, dtype=torch.long),
        "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
    }
    types = torch.zeros(len(rows), width, dtype=torch.long)
    for index, (ids, kinds) in enumerate(zip(token_rows, type_rows, strict=True)):
        out["input_ids"][index, width - len(ids) :] = torch.tensor(ids)
        out["attention_mask"][index, width - len(ids) :] = 1
        types[index, width - len(ids) :] = torch.tensor(kinds)
    if family.token_types is not None:
        out[family.token_types] = types
    out.update({key: torch.cat(values) for key, values in media.items()})
    return out
