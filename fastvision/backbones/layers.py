"""Small layers shared by the backbone files: conv + BatchNorm with its fusion, LayerNorm over channels, the MLP and
``make_divisible`` (the channel rounding of MobileNet/GhostNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to a multiple of ``divisor`` without losing more than 10% (MobileNetV2, arXiv 1801.04381)."""
    rounded = max(min_value or divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


class ConvBn(nn.Sequential):
    """A bias-free convolution followed by BatchNorm; ``fused()`` gives the equivalent single kernel and bias."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_batchnorm(self.conv.weight, None, self.bn)


def fuse_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` as one affine map (eval-mode statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    fused_bias = shift if bias is None else shift + bias * scale
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), fused_bias


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
    """Two 1x1 convolutions with an activation between: the transformer FFN on a (B, C, H, W) map."""

    def __init__(self, channels: int, hidden: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
