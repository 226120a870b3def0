"""The validated, versioned configuration of DART token reduction.

DART (Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters More", arXiv
2502.11494; the authors' code is github.com/ZichenWen1/DART) keeps the image tokens that *duplicate* a few pivot
tokens least, rather than the ones attention calls important. Like FastV it acts before layer ``k``: layers
``0..k-1`` see every token, layers ``k..`` only the kept ones, with their original positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fastvision.fastv.config import MODALITIES, OneStageConfig, check_stage


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DART {name} must be an int, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"DART {name}={value} is out of range: allowed is {name} >= {minimum}.")


@dataclass(frozen=True)
class DARTConfig(OneStageConfig):
    """Where DART prunes, how much, and how many pivots it compares against.

    At layer ``k-1`` each token's pivot score is the L1 norm of its post-RoPE key (summed over heads). The
    ``image_pivots`` image tokens and the ``text_pivots`` text tokens after the first image token with the largest
    scores are the pivots. Image pivots are always kept; then, pivot by pivot, each takes its share of the remaining
    budget: the candidate image tokens whose hidden states entering layer ``k`` (after the model's final norm) have
    the lowest cosine similarity to it. Each sample keeps exactly ``n - floor(ratio * n)`` of its ``n`` image tokens,
    the count FastV and the baselines keep, so methods compare at equal token budgets (the authors' code rounds each
    pivot's share up and keeps a few more).
    """

    k: int = field(default=2, metadata={"help": "Layers 0..k-1 see every token; pruning happens before layer k."})
    ratio: float = field(default=0.5, metadata={"help": "Fraction of each sample's image tokens dropped, 0 <= r < 1."})
    image_pivots: int = field(default=4, metadata={"help": "Pivots among the image tokens (always kept), >= 1."})
    text_pivots: int = field(default=4, metadata={"help": "Pivots among the text tokens after the image, >= 0."})
    modality: str = field(
        default="all",
        metadata={"help": "Prunable tokens: 'all' (image and video, as one pool), 'image' or 'video'."},
    )

    label: ClassVar[str] = "DART"
    method: ClassVar[str] = "dart"
    version: ClassVar[int] = 1
    scoring: ClassVar[str] = "dart"  # what the engine and the records call the ranking
    seed: ClassVar[int] = 0  # the ranking draws no noise
    schedule: ClassVar[None] = None  # one stage

    def __post_init__(self) -> None:
        check_stage(self.k, self.ratio, "", method="DART")
        _check_count("image_pivots", self.image_pivots, 1)
        _check_count("text_pivots", self.text_pivots, 0)
        if self.modality not in MODALITIES:
            raise ValueError(f"DART modality={self.modality!r} is unknown; allowed: {', '.join(MODALITIES)}.")
        object.__setattr__(self, "ratio", float(self.ratio))
