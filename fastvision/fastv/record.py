"""What a pruned prefill kept, readable after the forward (for the demo's heatmap and for analysis)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastvision.fastv.config import FastVConfig


@dataclass(frozen=True)
class KeptTokens:
    """The visual tokens of one prefill, their FastV scores and which of them the pruned layers saw.

    Positions index the prefill's input sequence; tensors are (batch, sequence) and stay on the model's device until
    read through the accessors, which return CPU tensors.
    """

    config: FastVConfig
    visual_mask: torch.Tensor  # (B, L) bool: image/video token positions
    kept_mask: torch.Tensor  # (B, L) bool: positions layers >= k computed on
    scores: torch.Tensor  # (B, L) float32: attention each position received at layer k-1

    @property
    def batch_size(self) -> int:
        return int(self.visual_mask.shape[0])

    def image_positions(self, sample: int = 0) -> torch.Tensor:
        """Positions of the sample's visual tokens, in sequence order."""
        return torch.nonzero(self.visual_mask[sample].cpu()).flatten()

    def kept_image_positions(self, sample: int = 0) -> torch.Tensor:
        """Positions of the visual tokens the sample kept, in sequence order."""
        return torch.nonzero((self.visual_mask[sample] & self.kept_mask[sample]).cpu()).flatten()

    def image_scores(self, sample: int = 0) -> torch.Tensor:
        """FastV score of each visual token of the sample, in sequence order (for heatmaps)."""
        return self.scores[sample].detach().float().cpu()[self.image_positions(sample)]

    def image_kept(self, sample: int = 0) -> torch.Tensor:
        """Boolean keep flag of each visual token of the sample, in sequence order."""
        return self.kept_mask[sample].cpu()[self.image_positions(sample)]

    @property
    def num_image_tokens(self) -> list[int]:
        return [int(n) for n in self.visual_mask.sum(dim=1).tolist()]

    @property
    def num_kept_image_tokens(self) -> list[int]:
        return [int(n) for n in (self.visual_mask & self.kept_mask).sum(dim=1).tolist()]
