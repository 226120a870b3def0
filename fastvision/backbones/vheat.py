"""vHeat (Wang et al., "vHeat: Building Vision Models upon Heat Conduction", arXiv 2405.16555; the block layout follows
the authors' MzeroMiko/vHeat).

The Heat Conduction Operator (HCO, paper §3.2) treats a feature map as a temperature field and solves the heat
equation in closed form: DCT2 of the input (cosine-basis matmuls along H and W), a per-frequency, per-channel decay
exp(-(ω_n² + ω_m²))^k, and the inverse DCT. The thermal diffusivity k = ReLU(Linear(FVE)) is predicted from a
learned frequency-value embedding (FVE, one per stage). It does not depend on the input, so the inference mode
(:meth:`HeatStage.reparameterize`) precomputes each block's decay map and drops the FVEs and the k-predictors: same
outputs, fewer parameters and MACs (arXiv 2405.16555 Table 1: vHeat-T 29.6M / 4.59G counted in inference mode).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.backbones.base import Backbone, check_img_size, image_cfg, stage_info
from fastvision.backbones.layers import ConvMlp, LayerNorm2d
from fastvision.backbones.registry import register_backbone


def dct_basis(size: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix (frequency n, position x): the HCO's cosine basis; its transpose inverts it."""
    position = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    frequency = torch.arange(size, dtype=torch.float32)[:, None]
    basis = torch.cos(frequency * position * math.pi) * math.sqrt(2 / size)
    basis[0] /= math.sqrt(2)
    return basis


def decay_base(height: int, width: int) -> torch.Tensor:
    """exp(-(ω_n² + ω_m²)) with ω in [0, π) on the frequency grid."""
    omega_n = torch.linspace(0, math.pi, height + 1)[:height, None]
    omega_m = torch.linspace(0, math.pi, width + 1)[None, :width]
    return torch.exp(-(omega_n**2 + omega_m**2))


class HeatConduction(nn.Module):
    """The HCO: depthwise conv, linear to (x, z), DCT → decay → IDCT on x, LayerNorm, gated by SiLU(z), linear."""

    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.linear = nn.Linear(channels, 2 * channels)
        self.to_k = nn.Linear(channels, channels)
        self.decay: nn.Parameter | None = None  # (res, res, C), set by precompute_decay
        self.out_norm = nn.LayerNorm(channels)
        self.out_linear = nn.Linear(channels, channels)
        self.register_buffer("basis", dct_basis(resolution), persistent=False)
        self.register_buffer("decay_base", decay_base(resolution, resolution), persistent=False)

    def decay_map(self, frequency_embedding: torch.Tensor | None) -> torch.Tensor:
        if self.decay is not None:
            return self.decay
        # k = ReLU(Linear(FVE)), applied functionally: a Parameter passed as a module input breaks FlopCounterMode
        diffusivity = F.relu(F.linear(frequency_embedding, self.to_k.weight, self.to_k.bias))
        return torch.pow(self.decay_base[:, :, None], diffusivity)

    @torch.no_grad()
    def precompute_decay(self, frequency_embedding: torch.Tensor) -> None:
        self.decay = nn.Parameter(self.decay_map(frequency_embedding).clone(), requires_grad=False)
        del self.to_k

    @staticmethod
    def _transform(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """``basis`` along H, then along W, of a (B, H, W, C) map: two matmuls of res³·C MACs each, not res⁴·C."""
        x = torch.matmul(basis, x.flatten(2)).unflatten(2, x.shape[2:])
        return (
            torch.matmul(basis, x.transpose(1, 2).flatten(2)).unflatten(2, x.shape[1:2] + x.shape[3:]).transpose(1, 2)
        )

    def forward(self, x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        """``decay``: this block's (res, res, C) map from :meth:`decay_map` (the stage computes it)."""
        height, width = x.shape[-2:]
        if (height, width) != (self.resolution, self.resolution):
            raise ValueError(f"vHeat stage built for {self.resolution}x{self.resolution} maps got {height}x{width}; "
                             f"create the backbone with img_size matching the input")  # fmt: skip
        x, z = self.linear(self.dwconv(x).permute(0, 2, 3, 1)).chunk(2, dim=-1)  # (B, H, W, C) each
        spectrum = self._transform(x, self.basis) * decay
        x = self._transform(spectrum, self.basis.t())
        x = self.out_linear(self.out_norm(x) * F.silu(z))
        return x.permute(0, 3, 1, 2)


class HeatBlock(nn.Module):
    """Post-norm residual block: x + γ1·LN(HCO(x)), then x + γ2·LN(MLP(x)) (layer scale 1e-5, as the authors)."""

    def __init__(self, channels: int, resolution: int, mlp_ratio: float = 4.0, layer_scale: float = 1e-5) -> None:
        super().__init__()
        self.op = HeatConduction(channels, resolution)
        self.norm1 = LayerNorm2d(channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio))
        self.norm2 = LayerNorm2d(channels)
        self.gamma1 = nn.Parameter(torch.full((channels,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1[:, None, None] * self.norm1(self.op(x, decay))
        return x + self.gamma2[:, None, None] * self.norm2(self.mlp(x))


class HeatStage(nn.Module):
    """An optional 3x3 stride-2 downsample, the stage's frequency-value embedding and its heat blocks."""

    def __init__(self, in_chs: int, channels: int, depth: int, resolution: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_chs, channels, 3, stride=2, padding=1, bias=False), LayerNorm2d(channels))
            if downsample
            else nn.Identity()
        )
        self.frequency_embedding: nn.Parameter | None = nn.Parameter(torch.zeros(resolution, resolution, channels))
        nn.init.trunc_normal_(self.frequency_embedding, std=0.02)
        self.blocks = nn.ModuleList(HeatBlock(channels, resolution) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:  # the maps, not the embedding, are passed on: modules never take a Parameter input
            x = block(x, block.op.decay_map(self.frequency_embedding))
        return x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Inference mode: each block keeps its precomputed decay; the embedding and the k-predictors go."""
        if self.frequency_embedding is None:
            return
        for block in self.blocks:
            block.op.precompute_decay(self.frequency_embedding)
        self.frequency_embedding = None


class VHeat(Backbone):
    def __init__(
        self, depths: tuple[int, ...], dim: int, img_size: int = 224, num_classes: int = 1000, in_chans: int = 3
    ) -> None:
        super().__init__()
        check_img_size(img_size, len(depths), "vHeat")
        dims = [dim * 2**index for index in range(len(depths))]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), LayerNorm2d(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), LayerNorm2d(dim),
        )  # fmt: skip
        self.stages = nn.ModuleList(
            HeatStage(dims[max(index - 1, 0)], dims[index], depth, img_size // 2 ** (index + 2), index > 0)
            for index, depth in enumerate(depths)
        )
        self.num_features = dims[-1]
        self.head_norm = LayerNorm2d(dims[-1])
        self.feature_info = stage_info(dims, [2 ** (index + 2) for index in range(len(depths))])
        self.default_cfg = image_cfg(img_size)
        self.reset_classifier(num_classes)
        self.apply(_init_linear)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.head_norm(x).mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


@register_backbone
def vheat_tiny(img_size: int = 224, **kwargs: Any) -> VHeat:
    """vHeat-T: dims 96·2^i, depths (2, 2, 6, 2); 29.6M params, 4.59G MACs (inference mode), 82.2% top-1."""
    return VHeat((2, 2, 6, 2), 96, img_size=img_size, **kwargs)


@register_backbone
def vheat_small(img_size: int = 224, **kwargs: Any) -> VHeat:
    """vHeat-S: dims 96·2^i, depths (2, 2, 18, 2); 50.1M params, 8.48G MACs, 83.6% top-1."""
    return VHeat((2, 2, 18, 2), 96, img_size=img_size, **kwargs)


@register_backbone
def vheat_base(img_size: int = 224, **kwargs: Any) -> VHeat:
    """vHeat-B: dims 128·2^i, depths (2, 2, 18, 2); 87.5M params, 14.9G MACs, 83.9% top-1."""
    return VHeat((2, 2, 18, 2), 128, img_size=img_size, **kwargs)
