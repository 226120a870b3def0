"""TRecViT: a causal recurrent video transformer, in PyTorch.

Pătrăucean et al., "TRecViT: A Recurrent Video Transformer" (arXiv 2412.14294); the official code is JAX only
(google-deepmind/trecvit, ``trecvit/modules.py``), read for its configuration. Each frame is cut into 1x16x16
patches with a learned spatial position embedding and a CLS token. Every layer then mixes

1. over time: a Griffin recurrent block (RG-LRU, width 2·D, causal temporal conv of width 4; ``rglru.py``), run
   independently for each spatial token, CLS included;
2. over space: a ViT block (self-attention among the tokens of one frame, then an MLP).

Nothing looks at a future frame, so the model streams: :meth:`TRecViT.step` takes one frame and a small state (per
layer and token: h and the last 3 conv inputs) and gives exactly the full clip's output for that frame. The
classifier follows the official decoder: the CLS token of each frame → Linear(D, 3072) → tanh, averaged over time,
→ Linear to the classes. :meth:`TRecViT.forward_frames` gives that average up to each frame, i.e. the causal
prediction a stream would show at that frame.

Configurations follow big_vision's ViT names (Ti/S/B); B is width 768, depth 12, 12 heads, ≈137M parameters with
the Kinetics-400 head (an estimate from the paper's layout; measured in docs/backbones.md). Inputs are (B, T, 3, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.backbones.base import Backbone
from fastvision.backbones.registry import register_backbone
from fastvision.backbones.rglru import RecurrentBlock, RecurrentState


@dataclass(frozen=True)
class TRecViTConfig:
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 32  # the clip length the paper trains with on Kinetics (any length runs)
    state_multiplier: int = 2  # lru_width = state_multiplier · width
    conv_width: int = 4
    min_rad: float = 0.5
    rep_size: int = 3072


class SpatialBlock(nn.Module):
    """A pre-norm ViT block over the tokens of one frame (self-attention by SDPA, then a GeLU MLP)."""

    def __init__(self, width: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, tokens, width = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(frames, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attended.transpose(1, 2).reshape(frames, tokens, width))
        return x + self.mlp(self.norm2(x))


@dataclass
class StreamState:
    """The state :meth:`TRecViT.step` carries: each layer's recurrent state, and the running head average."""

    layers: list[RecurrentState] = field(default_factory=list)
    frames_seen: int = 0
    pre_logits_sum: torch.Tensor | None = None


class TRecViT(Backbone):
    """TRecViT for clip classification; see the module docstring."""

    def __init__(self, config: TRecViTConfig | None = None, num_classes: int = 400, **overrides: Any) -> None:
        super().__init__()
        config = TRecViTConfig(**{**(config or TRecViTConfig()).__dict__, **overrides})
        if config.img_size % config.patch_size:
            raise ValueError(f"img_size {config.img_size} must be a multiple of patch_size {config.patch_size}")
        self.config = config
        width, grid = config.width, config.img_size // config.patch_size
        self.patch_embed = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.temporal = nn.ModuleList(
            RecurrentBlock(width, config.state_multiplier * width, config.num_heads, config.conv_width, config.min_rad)
            for _ in range(config.depth)
        )
        self.spatial = nn.ModuleList(SpatialBlock(width, config.num_heads, config.mlp_dim) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.pre_logits = nn.Linear(width, config.rep_size)
        self.num_features = config.rep_size
        self.num_classes = num_classes
        self.head = nn.Linear(config.rep_size, num_classes) if num_classes else nn.Identity()
        self.feature_info = [{"num_chs": width, "reduction": config.patch_size, "module": "norm"}]
        self.default_cfg = {
            "input_size": (config.num_frames, 3, config.img_size, config.img_size),
            "modality": "video",
            "num_frames": config.num_frames,
        }

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor]:
        return (torch.empty(batch_size, *self.default_cfg["input_size"]),)

    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames -> (N, 1 + patches, D) tokens, CLS first."""
        x = self.patch_embed(frames).flatten(2).transpose(1, 2) + self.pos_embed
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def _check_video(self, video: torch.Tensor) -> None:
        size = self.config.img_size
        if video.ndim != 5 or video.shape[2:] != (3, size, size):
            raise ValueError(f"TRecViT takes video of shape (B, T, 3, {size}, {size}), got {tuple(video.shape)}")

    def encode(
        self, video: torch.Tensor, states: list[RecurrentState] | None = None
    ) -> tuple[torch.Tensor, list[RecurrentState]]:
        """(B, T, 3, H, W) -> normalised tokens (B, T, 1 + patches, D), continuing from ``states`` when given."""
        self._check_video(video)
        batch, steps = video.shape[:2]
        x = self.tokenize(video.flatten(0, 1))
        tokens, width = x.shape[1], x.shape[2]
        new_states = []
        for index, (temporal, spatial) in enumerate(zip(self.temporal, self.spatial, strict=True)):
            per_token = x.reshape(batch, steps, tokens, width).transpose(1, 2).reshape(batch * tokens, steps, width)
            per_token, state = temporal(per_token, states[index] if states else None)
            new_states.append(state)
            x = per_token.reshape(batch, tokens, steps, width).transpose(1, 2).reshape(batch * steps, tokens, width)
            x = spatial(x)
        return self.norm(x).reshape(batch, steps, tokens, width), new_states

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.encode(video)[0]

    def forward_stages(self, video: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_features(video)]

    def frame_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """tanh(Linear(CLS)) of every frame: (B, T, rep_size)."""
        return torch.tanh(self.pre_logits(features[:, :, 0]))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.frame_pre_logits(features).mean(dim=1)
        return pooled if pre_logits else self.head(pooled)

    def forward_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Causal per-frame logits (B, T, classes): the head on the average of the pre-logits up to each frame."""
        per_frame = self.frame_pre_logits(self.forward_features(video))
        counts = torch.arange(1, per_frame.shape[1] + 1, device=video.device, dtype=per_frame.dtype)
        return self.head(per_frame.cumsum(dim=1) / counts[:, None])

    @torch.no_grad()
    def step(self, frame: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, StreamState]:
        """Streaming inference: one (B, 3, H, W) frame in, that frame's causal logits and the new state out.

        Feeding a clip frame by frame gives :meth:`forward_frames` of the clip, frame for frame.
        """
        state = state or StreamState()
        features, layers = self.encode(frame[:, None], state.layers or None)
        pre_logits = self.frame_pre_logits(features)[:, 0]
        total = pre_logits if state.pre_logits_sum is None else state.pre_logits_sum + pre_logits
        seen = state.frames_seen + 1
        return self.head(total / seen), StreamState(layers, seen, total)


PRESETS = {
    "trecvit_ti": {"width": 192, "depth": 12, "num_heads": 3, "mlp_dim": 768, "rep_size": 768},
    "trecvit_s": {"width": 384, "depth": 12, "num_heads": 6, "mlp_dim": 1536, "rep_size": 1536},
    "trecvit_b": {},
}


@register_backbone(modality="video")
def trecvit_b(num_classes: int = 400, **kwargs: Any) -> TRecViT:
    """TRecViT-B (width 768, depth 12, 12 heads, 1x16x16 patches), the paper's main model."""
    return TRecViT(TRecViTConfig(**{**PRESETS["trecvit_b"], **kwargs}), num_classes=num_classes)


@register_backbone(modality="video")
def trecvit_s(num_classes: int = 400, **kwargs: Any) -> TRecViT:
    """TRecViT at ViT-S's shape (width 384, 6 heads; the pre-logits width follows the MLP's)."""
    return TRecViT(TRecViTConfig(**{**PRESETS["trecvit_s"], **kwargs}), num_classes=num_classes)


@register_backbone(modality="video")
def trecvit_ti(num_classes: int = 400, **kwargs: Any) -> TRecViT:
    """TRecViT at ViT-Ti's shape (width 192, 3 heads)."""
    return TRecViT(TRecViTConfig(**{**PRESETS["trecvit_ti"], **kwargs}), num_classes=num_classes)
