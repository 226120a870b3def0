"""The validated, versioned configuration of DivPrune token reduction.

DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models", CVPR 2025,
arXiv 2503.02175) keeps, of each sample's projected image tokens, the subset that is most diverse (a Max-Min
Diversity Problem, solved greedily) and drops the rest before the language model: every decoder layer, layer 0
included, sees the kept tokens only, with their original positions. fastvision's implementation is written from the
paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fastvision.fastv.config import MODALITIES, OneStageConfig, check_stage


@dataclass(frozen=True)
class DivPruneConfig(OneStageConfig):
    """How much DivPrune drops: ``n - floor(ratio * n)`` of each sample's ``n`` image tokens are kept."""

    ratio: float = field(default=0.9, metadata={"help": "Fraction of each sample's image tokens dropped, 0 <= r < 1."})
    modality: str = field(
        default="all",
        metadata={"help": "Prunable tokens: 'all' (image and video, as one pool), 'image' or 'video'."},
    )

    label: ClassVar[str] = "DivPrune"
    method: ClassVar[str] = "divprune"
    version: ClassVar[int] = 1
    scoring: ClassVar[str] = "divprune"  # what the engine and the records call the ranking
    k: ClassVar[int] = 0  # before the language model: layer 0 already sees the kept tokens only
    seed: ClassVar[int] = 0
    schedule: ClassVar[None] = None

    def __post_init__(self) -> None:
        check_stage(1, self.ratio, "", method="DivPrune")  # k is fixed at 0; only the ratio is the user's
        if self.modality not in MODALITIES:
            raise ValueError(f"DivPrune modality={self.modality!r} is unknown; allowed: {', '.join(MODALITIES)}.")
        object.__setattr__(self, "ratio", float(self.ratio))
