"""CvT (Wu et al., "CvT: Introducing Convolutions to Vision Transformers", arXiv 2103.15808), as a thin wrapper over
transformers' ``CvtModel`` on the common backbone contract.

Three stages (dims 64/192/384, heads 1/3/6) each start with an overlapping convolutional token embedding (7x7 stride 4,
then 3x3 stride 2) and use depthwise-conv projections for attention (stride 1 for queries, 2 for keys and values).
A class token joins in the last stage only; the classifier reads it after a LayerNorm (paper §3, Table 2).
``forward_features`` therefore returns tokens, (B, 1 + H*W, C) with the class token first, as timm's ViTs do;
``forward_stages`` gives the three (B, C, H, W) maps that ``features_only`` and the VLM swap use.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import torch
from torch import nn

from fastvision.backbones.base import Backbone, image_cfg, stage_info
from fastvision.backbones.registry import register_backbone


class CvT(Backbone):
    def __init__(self, depths: tuple[int, ...], num_classes: int = 1000, img_size: int = 224, **config: Any) -> None:
        """``img_size`` is the input the model is described (and its MACs counted) at; CvT itself takes any size."""
        from transformers import CvtConfig, CvtModel

        super().__init__()
        self.config = CvtConfig(depth=list(depths), **config)
        self.cvt = CvtModel(self.config, add_pooling_layer=False)
        self.num_features = self.config.embed_dim[-1]
        self.norm = nn.LayerNorm(self.num_features, eps=self.config.layer_norm_eps)
        strides = list(itertools.accumulate(self.config.patch_stride, operator.mul))  # each stage's total stride
        self.feature_info = stage_info(list(self.config.embed_dim), strides, prefix="cvt.encoder.stages")
        self.default_cfg = image_cfg(img_size)
        self.reset_classifier(num_classes)

    def _encode(self, x: torch.Tensor) -> Any:
        return self.cvt(pixel_values=x, output_hidden_states=True, return_dict=True)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self._encode(x).hidden_states)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self._encode(x)
        tokens = out.last_hidden_state.flatten(2).transpose(1, 2)
        return torch.cat([out.cls_token_value, tokens], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.norm(x[:, 0])
        return pooled if pre_logits else self.head(pooled)


@register_backbone
def cvt_13(**kwargs: Any) -> CvT:
    """CvT-13: depths (1, 2, 10); 20.0M params, 4.58G MACs, 81.6% top-1 (paper Table 3)."""
    return CvT((1, 2, 10), **kwargs)


@register_backbone
def cvt_21(**kwargs: Any) -> CvT:
    """CvT-21: depths (1, 4, 16); 31.6M params, 7.21G MACs, 82.5% top-1."""
    return CvT((1, 4, 16), **kwargs)
