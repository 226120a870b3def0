"""The validated, versioned configuration of VisionZip token reduction.

VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", arXiv
2412.04467; the authors' code is github.com/dvlab-research/VisionZip) keeps the image tokens the vision tower's
[CLS] token attends to most ("dominant") and merges the rest into a few "contextual" tokens, before the language
model: every decoder layer, layer 0 included, sees the kept tokens only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from fastvision.fastv.config import OneStageConfig, check_stage

DEFAULT_CONTEXTUAL_SHARE = 10 / 64  # the paper's 54 dominant + 10 contextual of 64 tokens


@dataclass(frozen=True)
class VisionZipConfig(OneStageConfig):
    """How much VisionZip drops, and which share of the kept tokens are merged contextual tokens.

    Each image of ``P`` patches keeps ``m = P - floor(ratio * P)`` tokens (VisionZip budgets per image): ``c =
    round(contextual_share * m)`` contextual tokens (at least 1 when ``m >= 2``) and ``m - c`` dominant ones.
    """

    ratio: float = field(default=0.9, metadata={"help": "Fraction of each sample's image tokens dropped, 0 <= r < 1."})
    contextual_share: float = field(
        default=DEFAULT_CONTEXTUAL_SHARE,
        metadata={"help": "Share of the kept tokens that are merged contextual tokens, 0 <= share < 1 (10/64)."},
    )

    label: ClassVar[str] = "VisionZip"
    method: ClassVar[str] = "visionzip"
    version: ClassVar[int] = 1
    scoring: ClassVar[str] = "visionzip"
    k: ClassVar[int] = 0  # before the language model
    seed: ClassVar[int] = 0
    schedule: ClassVar[None] = None
    modality: ClassVar[str] = "image"  # the [CLS] attention of an image tower

    def __post_init__(self) -> None:
        check_stage(1, self.ratio, "", method="VisionZip")
        share = self.contextual_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not (math.isfinite(share)
                                                                                     and 0 <= share < 1):  # fmt: skip
            raise ValueError(f"VisionZip contextual_share={share!r} is out of range: allowed is 0 <= share < 1.")
        object.__setattr__(self, "ratio", float(self.ratio))
        object.__setattr__(self, "contextual_share", float(share))

    def contextual_count(self, kept: int) -> int:
        """Contextual tokens of an image that keeps ``kept`` tokens."""
        if kept < 2 or self.contextual_share == 0:
            return 0
        return min(kept - 1, max(1, round(self.contextual_share * kept)))
