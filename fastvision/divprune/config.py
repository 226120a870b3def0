"""The validated, versioned configuration of DivPrune token reduction.

DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models", CVPR 2025,
arXiv 2503.02175) keeps, of each sample's projected image tokens, the subset that is most diverse (a Max-Min
Diversity Problem, solved greedily) and drops the rest before the language model: every decoder layer, layer 0
included, sees the kept tokens only, with their original positions. fastvision's implementation is written from the
paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from fastvision.fastv.config import MODALITIES, check_stage, dropped_count


@dataclass(frozen=True)
class DivPruneConfig:
    """How much DivPrune drops: ``n - floor(ratio * n)`` of each sample's ``n`` image tokens are kept."""

    ratio: float = field(default=0.9, metadata={"help": "Fraction of each sample's image tokens dropped, 0 <= r < 1."})
    modality: str = field(
        default="all",
        metadata={"help": "Prunable tokens: 'all' (image and video, as one pool), 'image' or 'video'."},
    )

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

    @property
    def stages(self) -> tuple[tuple[int, float], ...]:
        return ((0, self.ratio),)

    def num_dropped(self, num_image_tokens: int) -> int:
        return dropped_count(self.ratio, num_image_tokens)

    def kept_counts(self, num_image_tokens: int) -> list[int]:
        return [num_image_tokens - self.num_dropped(num_image_tokens)]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, "k": 0, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DivPruneConfig:
        data = dict(data)
        method = data.pop("method", cls.method)
        version = data.pop("version", cls.version)
        if method != cls.method:
            raise ValueError(f"Not a DivPrune config: method={method!r}, expected {cls.method!r}.")
        if version != cls.version:
            raise ValueError(f"DivPrune config version {version!r} is not supported; this fastvision reads 1.")
        if data.pop("k", 0) != 0:
            raise ValueError("A DivPrune config prunes before the language model: its k is 0.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown DivPrune config keys {unknown}; allowed: {sorted(known)}.")
        return cls(**data)
