"""The contract every bundled backbone follows, after timm's (huggingface/pytorch-image-models):

- ``forward_features(x)``: the last feature map, (B, C, H, W), before pooling;
- ``forward_head(x, pre_logits=False)``: pooling and the classifier; ``pre_logits=True`` stops before the classifier;
- ``feature_info``: one dict per stage output with ``num_chs``, ``reduction`` (stride against the input) and
  ``module`` (the stage's attribute path);
- ``reset_classifier(num_classes)``: a new linear classifier on ``num_features`` (0 removes it).

``forward_stages(x)`` returns every stage's output; ``features_only`` models and the VLM swap are built on it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class: subclasses build ``self.stages`` and the head's parts, and set ``feature_info``."""

    num_classes: int
    num_features: int
    feature_info: list[dict[str, Any]]
    default_cfg: dict[str, Any]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The default: ``self.stem`` then each of ``self.stages`` in turn, every stage's output kept."""
        x, outputs = self.stem(x), []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


class FeatureExtractor(nn.Module):
    """``create_backbone(..., features_only=True)``: the stage outputs of ``model`` as a list (no classifier)."""

    def __init__(self, model: Backbone) -> None:
        super().__init__()
        self.model = model
        self.feature_info = model.feature_info
        self.default_cfg = model.default_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_stages(x)


def stage_info(channels: list[int], reductions: list[int], prefix: str = "stages") -> list[dict[str, Any]]:
    return [
        {"num_chs": chs, "reduction": reduction, "module": f"{prefix}.{index}"}
        for index, (chs, reduction) in enumerate(zip(channels, reductions, strict=True))
    ]


def check_img_size(img_size: int, stages: int, architecture: str) -> None:
    """Stage i of a stride-4 stem works at img_size / 2**(i + 2): refuse sizes that do not divide."""
    if img_size % 2 ** (stages + 1):
        raise ValueError(
            f"img_size must be a multiple of {2 ** (stages + 1)} for {architecture}'s {stages} stages, got {img_size}"
        )


def image_cfg(size: int = 224, **extra: Any) -> dict[str, Any]:
    """The input a backbone was designed (and its paper's MACs counted) for."""
    return {"input_size": (3, size, size), "modality": "image", **extra}
