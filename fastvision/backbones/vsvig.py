"""VSViG: a skeleton-based spatiotemporal vision graph network for real-time seizure detection from video.

Xu et al., "VSViG: Real-time Video-based Seizure Detection via Skeleton-based Spatiotemporal ViG" (ECCV 2024,
arXiv 2311.14775); the authors' code is xuyankun/VSViG (``VSViG.py``), read for the layer shapes. Input: for each of
T = 30 frames, a 32x32 RGB patch around each of P = 15 body keypoints, (B, 30, 15, 3, 32, 32), plus the keypoints'
coordinates (B, 30, 15, 3). The points form 5 body parts of 3 points each.

- Stem: each patch → Conv(32x32, stride 32) + BN, one vector per point and frame; the coordinates → 1x1 Conv + BN,
  added (the paper's "stem" position embedding).
- Blocks: a Grapher (two max-relative graph convolutions, after Vision GNN, Han et al. arXiv 2206.00272:
  ``[x_i, max_j (x_j − x_i)]`` → grouped 1x1 conv) followed by a temporal bottleneck. The inter-part graph joins
  each point to every point of the other parts; the intra-part graph to the other points of its own part. Each
  graph conv sits between 1x1 conv projections with a residual to the block's input.
- The temporal bottleneck: 1x1 → (3 frames x 3 points) conv → 1x1 (expansion 2), residual. Stride 2 over time at the
  first block of stages 2-4, so 30 frames become 4.
- Dynamic partition orders: each bottleneck first permutes the 5 parts in a fixed random order (kept in the
  state dict), so its 3-point window sees different neighbouring parts in every layer.
- Head: mean over time and points → 1x1 conv to 256 → BN → ReLU → 1x1 conv to one logit; sigmoid gives the seizure
  probability. The decision rule that turns a stream of probabilities into alarms is separate
  (``fastvision.backbones.seizure_rule``).

Base: widths (24, 48, 96, 192); Light: (12, 24, 48, 96); depths (2, 2, 6, 2). arXiv 2311.14775: 5.48M / 0.85G and
1.43M / 0.22G MACs. Where the official file differs from the paper's description we follow the paper, because the
code as published does not compute what it describes: its max-relative ops alias ``x_j`` and ``x_i`` (so the
relative features are all zero), the intra-part window is off by one and never advances past the first part
(``point+1 % 3``), and each Grapher builds two convs it never calls (the published parameter counts leave them out,
and so do we: ours match to 0.1%). Its temporal Conv3d also pads the singleton point-column axis to 3 and computes
two columns it throws away; ours is a 2-D conv over (time, points), a third of those MACs
(``fastvision flops --backbone vsvig_light`` prints both counts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastvision.backbones.base import Backbone
from fastvision.backbones.registry import register_backbone

POINTS, PARTS, PATCH = 15, 5, 32


def part_masks(points: int = POINTS, parts: int = PARTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra) neighbour masks (P, P): other parts' points, and the other points of the same part."""
    part = torch.arange(points) // (points // parts)
    same = part[:, None] == part[None, :]
    return ~same, same & ~torch.eye(points, dtype=torch.bool)


class MaxRelativeGraphConv(nn.Module):
    """``[x_i, max_{j ∈ N(i)} (x_j − x_i)]`` over a fixed neighbourhood, then a grouped 1x1 conv, BN and ReLU."""

    def __init__(self, channels: int, neighbours: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("neighbours", neighbours, persistent=False)
        self.mix = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 1, groups=4), nn.BatchNorm2d(2 * channels),
                                 nn.ReLU())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, P, 1) -> (N, 2C, P, 1)."""
        points = x[..., 0]
        relative = points[:, :, None, :] - points[:, :, :, None]  # [n, c, i, j] = x_j - x_i
        relative = relative.masked_fill(~self.neighbours, float("-inf")).amax(dim=-1)
        return self.mix(torch.cat([points, relative], dim=1)[..., None])


def conv_bn(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1), nn.BatchNorm2d(out_chs))


class Grapher(nn.Module):
    """Inter-part then intra-part graph convolution, each between 1x1 projections, with residuals to the input."""

    def __init__(self, in_chs: int, hidden: int) -> None:
        super().__init__()
        inter, intra = part_masks()
        self.inter_in, self.inter_out = conv_bn(in_chs, hidden), conv_bn(2 * hidden, in_chs)
        self.intra_in, self.intra_out = conv_bn(in_chs, hidden), conv_bn(2 * hidden, in_chs)
        self.inter = MaxRelativeGraphConv(hidden, inter)
        self.intra = MaxRelativeGraphConv(hidden, intra)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, P) -> same shape; the graph ops see each frame separately."""
        batch, channels, frames, points = x.shape
        per_frame = x.transpose(1, 2).reshape(batch * frames, channels, points, 1)
        y = self.act(self.inter_out(self.inter(self.inter_in(per_frame))) + per_frame)
        y = self.act(self.intra_out(self.intra(self.intra_in(y))) + per_frame)
        return y.reshape(batch, frames, channels, points).transpose(1, 2)


class PartTemporalBottleneck(nn.Module):
    """Permute the parts (dynamic partition order), then a (time x points) bottleneck with a projected residual."""

    def __init__(self, in_chs: int, hidden: int, expansion: int, stride: int, part_order: torch.Tensor) -> None:
        super().__init__()
        size = POINTS // PARTS
        point_order = (part_order[:, None] * size + torch.arange(size)).flatten()
        self.register_buffer("point_order", point_order)
        out_chs = hidden * expansion
        self.reduce = nn.Sequential(conv_bn(in_chs, hidden), nn.ReLU())
        self.temporal = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=(stride, 1), padding=1, padding_mode="replicate"),
            nn.BatchNorm2d(hidden), nn.ReLU(),
        )  # fmt: skip
        self.temporal[0].official_padded_columns = 2  # for the paper-convention MAC count (see budgets.py)
        self.expand = nn.Sequential(conv_bn(hidden, out_chs), nn.ReLU())
        self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=(stride, 1)), nn.BatchNorm2d(out_chs))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, P) -> (B, hidden · expansion, ceil(T / stride), P)."""
        x = x[..., self.point_order]
        return self.act(self.expand(self.temporal(self.reduce(x))) + self.shortcut(x))


class VSViG(Backbone):
    """VSViG; see the module docstring. ``forward(patches, keypoints)`` returns one logit per clip by default."""

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...] = (2, 2, 6, 2),
        expansion: int = 2,
        num_classes: int = 1,
        num_frames: int = 30,
        partition_seed: int = 0,
    ) -> None:
        super().__init__()
        self.patch_stem = nn.Sequential(nn.Conv2d(3, widths[0], PATCH, stride=PATCH), nn.BatchNorm2d(widths[0]))
        self.keypoint_stem = nn.Sequential(nn.Conv2d(3, widths[0], 1), nn.BatchNorm2d(widths[0]))
        generator = torch.Generator().manual_seed(partition_seed)
        self.stages = nn.ModuleList()
        channels, info = widths[0], []
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = []
            strides = ([2] if stage else []) + [1] * depth  # stages 2-4 start with a temporal downsampling block
            for stride in strides:
                order = torch.randperm(PARTS, generator=generator)
                blocks += [Grapher(channels, width), PartTemporalBottleneck(channels, width, expansion, stride, order)]
                channels = width * expansion
            self.stages.append(nn.Sequential(*blocks))
            info.append({"num_chs": channels, "reduction": 2**stage, "module": f"stages.{stage}"})
        self.feature_info = info
        self.num_features = 256
        self.pre_logits = nn.Sequential(nn.Conv2d(channels, 256, 1), nn.BatchNorm2d(256), nn.ReLU())
        self.num_classes = num_classes
        self.head = nn.Conv2d(256, num_classes, 1) if num_classes else nn.Identity()
        self.default_cfg = {"input_size": (num_frames, POINTS, 3, PATCH, PATCH), "modality": "skeleton",
                            "num_frames": num_frames}  # fmt: skip
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # the authors' initialisation
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        frames, points = self.default_cfg["input_size"][:2]
        return torch.empty(batch_size, *self.default_cfg["input_size"]), torch.empty(batch_size, frames, points, 3)

    def stem(self, patches: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Patches (B, T, P, 3, 32, 32) and coordinates (B, T, P, 3) -> (B, C, T, P)."""
        if patches.ndim != 6 or patches.shape[2:] != (POINTS, 3, PATCH, PATCH):
            raise ValueError(f"VSViG takes patches of shape (B, T, {POINTS}, 3, {PATCH}, {PATCH}), "
                             f"got {tuple(patches.shape)}")  # fmt: skip
        if keypoints.shape != (*patches.shape[:3], 3):
            raise ValueError(f"keypoints must have shape {(*patches.shape[:3], 3)}, got {tuple(keypoints.shape)}")
        batch, frames = patches.shape[:2]
        x = self.patch_stem(patches.flatten(0, 2)) + self.keypoint_stem(keypoints.reshape(-1, 3, 1, 1))
        return x.reshape(batch, frames, POINTS, -1).permute(0, 3, 1, 2)

    def forward_stages(self, patches: torch.Tensor, keypoints: torch.Tensor) -> list[torch.Tensor]:
        x, outputs = self.stem(patches, keypoints), []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, patches: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(patches, keypoints)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.pre_logits(x.mean(dim=(2, 3), keepdim=True))
        return pooled.flatten(1) if pre_logits else self.head(pooled).flatten(1)

    def forward(self, patches: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(patches, keypoints))

    def reset_classifier(self, num_classes: int) -> None:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
        self.num_classes = num_classes
        self.head = nn.Conv2d(256, num_classes, 1) if num_classes else nn.Identity()

    @torch.no_grad()
    def predict_proba(self, patches: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """The seizure probability of each clip (single-logit models)."""
        return torch.sigmoid(self(patches, keypoints)[:, 0])


@register_backbone(modality="skeleton")
def vsvig_base(**kwargs: Any) -> VSViG:
    """VSViG-Base: widths (24, 48, 96, 192), depths (2, 2, 6, 2), expansion 2."""
    return VSViG(widths=(24, 48, 96, 192), **kwargs)


@register_backbone(modality="skeleton")
def vsvig_light(**kwargs: Any) -> VSViG:
    """VSViG-Light: widths (12, 24, 48, 96), depths (2, 2, 6, 2), expansion 2."""
    return VSViG(widths=(12, 24, 48, 96), **kwargs)
