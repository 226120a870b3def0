"""What a pruned prefill kept, stage by stage, readable after the forward (for the demo's heatmap and for analysis).

Positions index the prefill's input sequence. Image and video tokens are told apart (``kind="image"``, ``"video"``,
or ``"visual"`` for both); each stage of a schedule has its own kept set and its own scores, because a later stage
ranks only the tokens the earlier stages kept (PyramidDrop, arXiv 2410.17247, §3.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastvision.fastv.config import FastVConfig
from fastvision.fastv.selection import StageSelection

KINDS = ("image", "video", "visual")


@dataclass(frozen=True)
class StageRecord:
    """One stage: the tokens its layers computed on and the scores that chose them.

    ``kept_mask`` (B, L) bool: positions layers ``layer..`` (up to the next stage) computed on.
    ``scores`` (B, L) float32: the attention each position received at layer ``layer - 1`` (the seeded noise with
    ``scoring="random"``); NaN at positions an earlier stage had already dropped (that layer never saw them).
    """

    layer: int
    ratio: float
    kept_mask: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class KeptTokens:
    """The visual tokens of one prefill and, per stage, which of them the pruned layers saw and their scores.

    ``prunable_mask`` marks the tokens that were ranked: the modalities ``config.modality`` selects, without each
    row's last token (it is never dropped). Tensors stay on the model's device; the accessors return CPU tensors.
    """

    config: FastVConfig
    image_mask: torch.Tensor  # (B, L) bool: image placeholder positions
    video_mask: torch.Tensor  # (B, L) bool: video placeholder positions
    prunable_mask: torch.Tensor  # (B, L) bool: positions the stages ranked
    stages: tuple[StageRecord, ...]

    @property
    def kept_mask(self) -> torch.Tensor:
        """(B, L) bool: positions the last stage's layers (through the final layer) computed on."""
        return self.stages[-1].kept_mask

    @property
    def batch_size(self) -> int:
        return int(self.image_mask.shape[0])

    def mask(self, kind: str = "visual") -> torch.Tensor:
        """(B, L) bool positions of ``kind``: "image", "video" or "visual" (both)."""
        if kind == "image":
            return self.image_mask
        if kind == "video":
            return self.video_mask
        if kind == "visual":
            return self.image_mask | self.video_mask
        raise ValueError(f"Unknown token kind {kind!r}; allowed: {', '.join(KINDS)}.")

    def positions(self, sample: int = 0, kind: str = "image", kept: bool = False, stage: int = -1) -> torch.Tensor:
        """Positions of the sample's ``kind`` tokens (only those ``stage`` kept if ``kept``), in sequence order."""
        mask = self.mask(kind)[sample]
        if kept:
            mask = mask & self.stages[stage].kept_mask[sample]
        return torch.nonzero(mask.cpu()).flatten()

    def image_positions(self, sample: int = 0) -> torch.Tensor:
        """Positions of the sample's image tokens (not video), in sequence order."""
        return self.positions(sample, "image")

    def kept_image_positions(self, sample: int = 0) -> torch.Tensor:
        """Positions of the image tokens the sample kept through the last layer, in sequence order."""
        return self.positions(sample, "image", kept=True)

    def image_scores(self, sample: int = 0, stage: int = 0) -> torch.Tensor:
        """Score of each image token of the sample at ``stage`` (default the first, which saw them all), in order."""
        return self.stages[stage].scores[sample].detach().float().cpu()[self.image_positions(sample)]

    def image_kept(self, sample: int = 0, stage: int = -1) -> torch.Tensor:
        """Boolean keep flag of each image token of the sample after ``stage`` (default the last), in order."""
        return self.stages[stage].kept_mask[sample].cpu()[self.image_positions(sample)]

    def counts(self, kind: str = "visual", kept: bool = False, stage: int = -1) -> list[int]:
        """Per sample, how many ``kind`` tokens there are (or, with ``kept``, how many ``stage`` kept)."""
        mask = self.mask(kind)
        if kept:
            mask = mask & self.stages[stage].kept_mask
        return [int(n) for n in mask.sum(dim=1).tolist()]

    @property
    def num_image_tokens(self) -> list[int]:
        """Image tokens (not video) per sample."""
        return self.counts("image")

    @property
    def num_kept_image_tokens(self) -> list[int]:
        """Image tokens (not video) per sample that the last stage kept."""
        return self.counts("image", kept=True)

    @property
    def num_visual_tokens(self) -> list[int]:
        """Image and video tokens per sample."""
        return self.counts("visual")

    @property
    def num_kept_visual_tokens(self) -> list[int]:
        """Image and video tokens per sample that the last stage kept."""
        return self.counts("visual", kept=True)


def record_stages(
    config: FastVConfig, selections: list[StageSelection], prunable: torch.Tensor, masks: dict[str, torch.Tensor]
) -> KeptTokens:
    """The record of a finished prefill, every stage's tensors scattered back to original sequence positions.

    ``masks`` are the adapter's per-modality placeholder masks; when empty (a direct language-model prefill), the
    prunable positions count as image tokens.
    """
    empty = torch.zeros_like(selections[0].relative.kept)
    device = empty.device
    stages, seen = [], None  # seen: (index, valid) of the tokens this stage's scoring layer saw
    for (layer, ratio), selection in zip(config.stages, selections, strict=True):
        index, valid = selection.index.to(device), selection.valid.to(device)  # stages may sit on other devices
        kept = empty.scatter(1, index, valid)
        scores = selection.relative.scores.float().to(device)
        if seen is not None:
            relative = torch.where(seen[1], scores, float("nan"))
            scores = torch.full(empty.shape, float("nan"), device=device).scatter(1, seen[0], relative)
        stages.append(StageRecord(layer, ratio, kept, scores))
        seen = (index, valid)
    image = masks["image"] if "image" in masks else (prunable if not masks else empty)
    video = masks.get("video", empty)
    return KeptTokens(config, image.to(device), video.to(device), prunable.to(device), tuple(stages))
