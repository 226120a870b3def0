"""RepMLPNet (Ding et al., "RepMLPNet: Hierarchical Vision MLP with Re-parameterized Locality", arXiv 2112.11081;
the stage settings follow the authors' DingXiaoH/RepMLP ``repmlpnet.py``).

Each RepMLP block splits the feature map into non-overlapping h x w partitions and mixes the pixels of a partition with
one fully connected (hw x hw) matrix per "shareset" of channels (channel c uses shareset c mod S), the Channel
Perceptron. During training, depthwise conv + BN branches over the same partition (the Local Perceptron, kernels 1 and
3) add locality. Because the convolutions are zero-padded inside each partition, each one is itself a linear map of
the partition, so :meth:`RepMLPBlock.reparameterize` folds every branch and both BatchNorms into the FC matrix
("locality injection", paper §3.3) by pushing an identity matrix through the convolution. A Global Perceptron
(pool, 1x1 conv bottleneck, sigmoid) scales the output per channel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.backbones.base import Backbone, check_img_size, image_cfg, stage_info
from fastvision.backbones.layers import ConvBn
from fastvision.backbones.registry import register_backbone


class GlobalPerceptron(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class RepMLPBlock(nn.Module):
    """Channel + Local + Global Perceptron over ``partition`` x ``partition`` windows of a (B, C, H, W) map."""

    def __init__(self, channels: int, partition: int, sharesets: int, conv_kernels: tuple[int, ...] = (1, 3)):
        super().__init__()
        if channels % sharesets:
            raise ValueError(f"channels ({channels}) must be a multiple of sharesets ({sharesets})")
        self.channels, self.partition, self.sharesets = channels, partition, sharesets
        pixels = partition * partition
        self.global_perceptron = GlobalPerceptron(channels)
        self.fc3_weight = nn.Parameter(torch.empty(sharesets, pixels, pixels))
        nn.init.kaiming_uniform_(self.fc3_weight.view(sharesets * pixels, pixels), a=5**0.5)
        self.fc3_bias: nn.Parameter | None = None  # appears with re-parameterisation
        self.fc3_bn: nn.BatchNorm2d | None = nn.BatchNorm2d(sharesets)
        self.local = nn.ModuleList(
            ConvBn(sharesets, sharesets, k, padding=k // 2, groups=sharesets) for k in conv_kernels
        )

    @property
    def deployed(self) -> bool:
        return self.fc3_bn is None

    def _partitions(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        batch, channels, height, width = x.shape
        p = self.partition
        if height % p or width % p:
            raise ValueError(f"feature map {height}x{width} is not divisible into {p}x{p} partitions; build the "
                             f"backbone with img_size matching the input")  # fmt: skip
        rows, cols = height // p, width // p
        x = x.reshape(batch, channels, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, self.sharesets, p, p), (rows, cols)  # (B*rows*cols*C/S, S, p, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        scale = self.global_perceptron(x)
        parts, (rows, cols) = self._partitions(x)
        p = self.partition
        # One batched matmul per shareset over every partition, (S, hw, hw) @ (S, hw, N): broadcasting the weight
        # over the N partitions instead would materialise an (N, S, hw, hw) gradient in the backward pass.
        flat = parts.reshape(-1, self.sharesets, p * p).permute(1, 2, 0)
        mixed = torch.bmm(self.fc3_weight, flat).permute(2, 0, 1).reshape_as(parts)
        if self.deployed:
            mixed = mixed + self.fc3_bias.reshape(1, self.sharesets, p, p)
        else:
            mixed = self.fc3_bn(mixed)
            for branch in self.local:
                mixed = mixed + branch(parts)
        out = mixed.reshape(batch, rows, cols, channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(batch, channels, height, width) * scale

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Locality injection: one FC matrix (and bias) per shareset, no conv branch or BatchNorm left (§3.3)."""
        if self.deployed:
            return
        s, p = self.sharesets, self.partition
        scale = self.fc3_bn.weight / torch.sqrt(self.fc3_bn.running_var + self.fc3_bn.eps)
        weight = self.fc3_weight * scale[:, None, None]
        bias = (self.fc3_bn.bias - self.fc3_bn.running_mean * scale)[:, None].expand(s, p * p).clone()
        identity = torch.eye(p * p, dtype=weight.dtype).reshape(p * p, 1, p, p).expand(p * p, s, p, p)
        for branch in self.local:
            kernel, branch_bias = branch.fused()
            k = kernel.shape[-1]
            responses = F.conv2d(identity, kernel, padding=k // 2, groups=s)  # (input pixel, s, p, p)
            weight += responses.reshape(p * p, s, p * p).permute(1, 2, 0)  # -> (s, output pixel, input pixel)
            bias += branch_bias[:, None]
        self.fc3_weight = nn.Parameter(weight.contiguous())
        self.fc3_bias = nn.Parameter(bias.contiguous())
        self.fc3_bn = None
        self.local = nn.ModuleList()


class FeedForward(nn.Module):
    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        self.fc1 = ConvBn(channels, channels * expand, 1)
        self.act = nn.GELU()
        self.fc2 = ConvBn(channels * expand, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RepMLPUnit(nn.Module):
    """Pre-BN RepMLP block and FFN, each with a residual connection."""

    def __init__(self, channels: int, partition: int, sharesets: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.mlp = RepMLPBlock(channels, partition, sharesets)
        self.norm2 = nn.BatchNorm2d(channels)
        self.ffn = FeedForward(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mlp(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _conv_bn_relu(in_chs: int, out_chs: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(ConvBn(in_chs, out_chs, kernel, stride=kernel), nn.ReLU())


class RepMLPNet(Backbone):
    """A 4x4 patch embedding, four stages of RepMLP units joined by 2x2 stride-2 conv downsampling, BN, pool, linear.

    Partitions cover each stage's whole feature map at ``img_size`` (img_size/4, /8, /16, /32), as in the paper.
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        depths: tuple[int, ...],
        sharesets: tuple[int, ...],
        img_size: int = 224,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_img_size(img_size, len(channels), "RepMLPNet")
        self.stem = _conv_bn_relu(in_chans, channels[0], 4)
        stages = []
        for index, (chs, depth, shares) in enumerate(zip(channels, depths, sharesets, strict=True)):
            blocks: list[nn.Module] = [] if index == 0 else [_conv_bn_relu(channels[index - 1], chs, 2)]
            blocks += [RepMLPUnit(chs, img_size // 2 ** (index + 2), shares) for _ in range(depth)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.num_features = channels[-1]
        self.head_norm = nn.BatchNorm2d(channels[-1])
        self.feature_info = stage_info(list(channels), [2 ** (index + 2) for index in range(len(channels))])
        self.default_cfg = image_cfg(img_size)
        self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_norm(self.forward_stages(x)[-1])


_TINY = {"channels": (64, 128, 256, 512), "depths": (2, 2, 6, 2), "sharesets": (1, 4, 16, 128)}
_BASE = {"channels": (96, 192, 384, 768), "depths": (2, 2, 12, 2), "sharesets": (1, 4, 32, 128)}


@register_backbone
def repmlpnet_t224(img_size: int = 224, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-T224: 38.3M params, 2.8G MACs, 76.6% top-1 (paper Table 4)."""
    return RepMLPNet(**_TINY, img_size=img_size, **kwargs)


@register_backbone
def repmlpnet_b224(img_size: int = 224, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-B224: 68.2M params, 6.7G MACs, 80.3% top-1."""
    return RepMLPNet(**_BASE, img_size=img_size, **kwargs)


@register_backbone
def repmlpnet_b256(img_size: int = 256, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-B256: 96.5M params, 9.6G MACs, 81.0% top-1."""
    return RepMLPNet(**_BASE, img_size=img_size, **kwargs)


@register_backbone
def repmlpnet_d256(img_size: int = 256, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-D256 (deeper, narrower): 86.9M params, 8.6G MACs, 80.8% top-1."""
    return RepMLPNet((80, 160, 320, 640), (2, 2, 18, 2), (1, 4, 16, 128), img_size=img_size, **kwargs)


@register_backbone
def repmlpnet_l256(img_size: int = 256, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-L256: 117.7M params, 11.5G MACs, 81.7% top-1."""
    return RepMLPNet((96, 192, 384, 768), (2, 2, 18, 2), (1, 4, 32, 256), img_size=img_size, **kwargs)
