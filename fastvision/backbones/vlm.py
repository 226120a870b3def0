"""``fastvision.swap_vision_tower``: put a bundled backbone in place of a LLaVA model's vision tower.

The backbone's feature map at one stage (the last by default) becomes the image tokens, H·W of them, in row-major
order; the multimodal projector is re-initialised for the backbone's width, since the old one was trained for another
feature space (LLaVA, arXiv 2304.08485 §4.2, trains it first for exactly that reason). ``swap_processor`` makes a
``LlavaProcessor`` insert the matching number of ``<image>`` tokens and resize images to the backbone's input size.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class BackboneVisionTower(nn.Module):
    """A backbone presented the way LLaVA calls its tower: ``tower(pixel_values, ...)`` -> ``.hidden_states``."""

    def __init__(self, backbone: nn.Module, stage: int, name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.stage = stage
        self.backbone_name = name
        info = backbone.feature_info[stage]
        self.hidden_size, self.reduction = info["num_chs"], info["reduction"]
        self.image_size = backbone.default_cfg["input_size"][-1]

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.reduction) ** 2

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        feature_map = self.backbone.forward_stages(pixel_values)[self.stage]
        tokens = feature_map.flatten(2).transpose(1, 2)  # (B, H*W, C)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, hidden_states=(tokens,))


def _check_llava(model: Any) -> None:
    from transformers import LlavaForConditionalGeneration

    if not isinstance(model, LlavaForConditionalGeneration):
        raise TypeError(f"swap_vision_tower takes a LlavaForConditionalGeneration, got {type(model).__name__}")


def swap_vision_tower(
    model: Any, backbone: str | nn.Module, *, stage: int = -1, img_size: int | None = None, seed: int | None = None,
    **backbone_kwargs: Any,
) -> Any:  # fmt: skip
    """Replace ``model``'s vision tower with ``backbone`` and return ``model``.

    ``backbone`` is a registered name (built with fresh weights, ``img_size`` and ``backbone_kwargs`` passed on) or an
    already built backbone (any module with ``forward_stages`` and ``feature_info``, e.g. a small variant). ``stage``
    picks the feature map, an index into ``feature_info``. Everything is built and checked before the model is
    touched, so a bad argument leaves it as it was.
    """
    from fastvision.backbones.registry import backbone_modality, create_backbone

    _check_llava(model)
    if isinstance(backbone, str):
        if backbone_modality(backbone) != "image":
            raise ValueError(f"backbone {backbone!r} takes {backbone_modality(backbone)} input; a VLM tower needs an "
                             f"image backbone")  # fmt: skip
        if seed is not None:
            torch.manual_seed(seed)
        kwargs = dict(backbone_kwargs, **({"img_size": img_size} if img_size is not None else {}))
        network, name = create_backbone(backbone, num_classes=0, **kwargs), backbone
    else:
        if not (hasattr(backbone, "forward_stages") and hasattr(backbone, "feature_info")):
            raise TypeError(f"backbone must be a registered name or a backbone module with forward_stages and "
                            f"feature_info, got {type(backbone).__name__}")  # fmt: skip
        if img_size is not None or backbone_kwargs:
            raise ValueError("img_size and backbone kwargs apply to a backbone built by name, not to a built one")
        network, name, kwargs = backbone, getattr(backbone, "backbone_name", type(backbone).__name__), {}
    stages = len(network.feature_info)
    if not isinstance(stage, int) or not -stages <= stage < stages:
        raise ValueError(f"stage {stage!r} out of range for {backbone!r}, which has {stages} stages "
                         f"(use -{stages}..{stages - 1})")  # fmt: skip
    tower = BackboneVisionTower(network, stage, name).to(device=model.device, dtype=model.dtype)
    config = copy.deepcopy(model.config)
    config.vision_config.hidden_size = tower.hidden_size
    config.vision_config.image_size = tower.image_size
    config.vision_config.patch_size = tower.reduction
    config.vision_feature_layer = -1
    config.vision_feature_select_strategy = "full"
    config.image_seq_length = tower.num_image_tokens
    config.fastvision_vision_tower = {"backbone": name, "stage": stage, **kwargs}
    projector = type(model.model.multi_modal_projector)(config).to(device=model.device, dtype=model.dtype)
    model.model.vision_tower = tower
    model.model.multi_modal_projector = projector
    model.config = config
    model.model.config = config
    return model


def swap_processor(processor: Any, model: Any) -> Any:
    """A copy of a ``LlavaProcessor`` that feeds ``model``'s swapped tower: its input size and token count."""
    tower = model.model.vision_tower
    if not isinstance(tower, BackboneVisionTower):
        raise ValueError("the model's vision tower is not a swapped fastvision backbone; call swap_vision_tower first")
    swapped = copy.deepcopy(processor)
    size = tower.image_size
    swapped.image_processor.size = {"shortest_edge": size}
    swapped.image_processor.crop_size = {"height": size, "width": size}
    swapped.patch_size = tower.reduction
    swapped.num_additional_image_tokens = 0
    swapped.vision_feature_select_strategy = "full"
    return swapped
