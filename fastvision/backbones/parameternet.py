"""ParameterNet (Han et al., "ParameterNet: Parameters Are All You Need for Large-scale Visual Pretraining of Mobile
Networks", arXiv 2306.14525; the layout follows the authors' huawei-noah/Efficient-AI-Backbones
``parameternet_pytorch/cv/parameternet.py``).

A GhostNet (arXiv 1911.11907) whose convolutions are dynamic: each holds M expert kernels, and a single Linear on the
globally pooled input followed by a sigmoid mixes them per sample (paper Eq. 4-5), so the parameters grow about M
times while the MACs barely move. Dynamic: the stem, both convolutions of every Ghost module, the shortcut
convolutions and the final 1x1 ConvBnAct. Static: the stride-2 depthwise convolution, squeeze-excite, ``conv_head``
and the classifier (Han et al., arXiv 2306.14525).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.backbones.base import Backbone, image_cfg
from fastvision.backbones.layers import make_divisible
from fastvision.backbones.registry import register_backbone


class DynamicConv(nn.Module):
    """M expert kernels mixed per sample by sigmoid(Linear(GAP(x))), then one grouped convolution per batch."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, padding: int | None = None,
        groups: int = 1, experts: int = 4,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_chs, self.out_chs, self.kernel, self.stride, self.groups = in_chs, out_chs, kernel, stride, groups
        self.padding = ((stride - 1) + (kernel - 1)) // 2 if padding is None else padding
        self.routing = nn.Linear(in_chs, experts)
        self.weight = nn.Parameter(torch.empty(experts, out_chs * (in_chs // groups) * kernel * kernel))
        fan_in = (in_chs // groups) * kernel * kernel
        nn.init.uniform_(self.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        routing = torch.sigmoid(self.routing(x.mean(dim=(2, 3))))  # (B, M)
        kernels = torch.matmul(routing, self.weight).reshape(
            batch * self.out_chs, self.in_chs // self.groups, self.kernel, self.kernel
        )
        out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), kernels, None, self.stride, self.padding,
                       groups=self.groups * batch)  # fmt: skip
        return out.reshape(batch, self.out_chs, *out.shape[2:])


def _dynamic_bn(in_chs: int, out_chs: int, kernel: int, experts: int, act: type[nn.Module] | None, **conv: Any):
    layers: list[nn.Module] = [DynamicConv(in_chs, out_chs, kernel, experts=experts, **conv), nn.BatchNorm2d(out_chs)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


class GhostModule(nn.Module):
    """Half the output channels from a 1x1 (dynamic) conv, the other half from a cheap 3x3 depthwise one on them."""

    def __init__(self, in_chs: int, out_chs: int, experts: int, act: type[nn.Module] | None = nn.ReLU) -> None:
        super().__init__()
        self.out_chs = out_chs
        primary = math.ceil(out_chs / 2)
        self.primary_conv = _dynamic_bn(in_chs, primary, 1, experts, act, padding=0)
        self.cheap_operation = _dynamic_bn(primary, primary, 3, experts, act, padding=1, groups=primary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.primary_conv(x)
        return torch.cat([x, self.cheap_operation(x)], dim=1)[:, : self.out_chs]


class SqueezeExcite(nn.Module):
    """Squeeze-excite with a hard-sigmoid gate; the reduced width is rounded to a multiple of 4."""

    def __init__(self, channels: int, ratio: float, act: type[nn.Module]) -> None:
        super().__init__()
        reduced = make_divisible(channels * ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.conv_expand(self.act(self.conv_reduce(x.mean(dim=(2, 3), keepdim=True)))))


class GhostBottleneck(nn.Module):
    def __init__(
        self, in_chs: int, mid_chs: int, out_chs: int, kernel: int, stride: int, se_ratio: float,
        act: type[nn.Module], experts: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, experts, act)
        self.conv_dw = (
            nn.Sequential(nn.Conv2d(mid_chs, mid_chs, kernel, stride, (kernel - 1) // 2, groups=mid_chs, bias=False),
                          nn.BatchNorm2d(mid_chs))
            if stride > 1 else nn.Identity()
        )  # fmt: skip
        self.se = SqueezeExcite(mid_chs, se_ratio, act) if se_ratio > 0 else nn.Identity()
        self.ghost2 = GhostModule(mid_chs, out_chs, experts, act=None)
        if in_chs == out_chs and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                *_dynamic_bn(in_chs, in_chs, kernel, experts, None, stride=stride, padding=(kernel - 1) // 2,
                             groups=in_chs),
                *_dynamic_bn(in_chs, out_chs, 1, experts, None, padding=0),
            )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.ghost2(self.se(self.conv_dw(self.ghost1(x))))


# GhostNet's stages: (kernel, expansion, out channels, SE ratio, stride) per bottleneck.
GHOSTNET_STAGES = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((3, 120, 40, 0.25, 1), (3, 120, 40, 0.25, 1)),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 200, 80, 0, 1), (3, 200, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((3, 960, 160, 0.25, 1),) * 5,
)  # fmt: skip


class ParameterNet(Backbone):
    def __init__(
        self, width: float, experts: int = 4, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2,
        act: type[nn.Module] = nn.Hardswish,
    ) -> None:  # fmt: skip
        super().__init__()
        stem_chs = make_divisible(16 * width, 4)
        self.stem = _dynamic_bn(in_chans, stem_chs, 3, experts, act, stride=2, padding=1)
        stages, previous, reduction, self.feature_info = [], stem_chs, 2, []
        for index, config in enumerate(GHOSTNET_STAGES):
            blocks = []
            for kernel, expansion, channels, se_ratio, stride in config:
                out_chs, mid_chs = make_divisible(channels * width, 4), make_divisible(expansion * width, 4)
                blocks.append(GhostBottleneck(previous, mid_chs, out_chs, kernel, stride, se_ratio, act, experts))
                previous, reduction = out_chs, reduction * stride
            stages.append(nn.Sequential(*blocks))
            if index + 1 == len(GHOSTNET_STAGES) or GHOSTNET_STAGES[index + 1][0][-1] > 1:  # last block at a stride
                self.feature_info.append({"num_chs": previous, "reduction": reduction, "module": f"stages.{index}"})
        last_chs = make_divisible(GHOSTNET_STAGES[-1][-1][1] * width, 4)
        stages.append(_dynamic_bn(previous, last_chs, 1, experts, act, padding=0))
        self.feature_info[-1] = {"num_chs": last_chs, "reduction": 32, "module": f"stages.{len(stages) - 1}"}
        self.stages = nn.ModuleList(stages)
        self._feature_stages = {int(info["module"].split(".")[1]) for info in self.feature_info}
        self.num_features = 1280
        self.conv_head = nn.Conv2d(last_chs, self.num_features, 1)
        self.head_act = act()
        self.dropout = dropout
        self.default_cfg = image_cfg(224)
        self.reset_classifier(num_classes)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, outputs = self.stem(x), []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self._feature_stages:
                outputs.append(x)
        return outputs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_act(self.conv_head(x.mean(dim=(2, 3), keepdim=True))).flatten(1)
        if pre_logits:
            return x
        return self.head(F.dropout(x, self.dropout, self.training))


@register_backbone
def parameternet_600m(**kwargs: Any) -> ParameterNet:
    """ParameterNet-600M: GhostNet x1.9 with 4-expert dynamic convolutions; 34.5M params, 0.61G MACs, 81.6% top-1
    (ImageNet-22K pretraining, paper Table 3)."""
    return ParameterNet(width=1.9, **kwargs)


@register_backbone
def parameternet_300m(**kwargs: Any) -> ParameterNet:
    """ParameterNet-300M: GhostNet x1.3 with 4-expert dynamic convolutions.

    The authors' code defines only the 600M model. This one takes GhostNet's own x1.3 width (0.23G MACs static,
    arXiv 1911.11907 Table 7) and makes it dynamic as the 600M model is; its measured budget is in docs/backbones.md.
    """
    return ParameterNet(width=1.3, **kwargs)
