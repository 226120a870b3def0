"""The validated, versioned configuration of FastV visual-token pruning.

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", arXiv 2403.06764, §4) lets layers ``0..k-1``
see every token, ranks the image tokens by the attention they receive at layer ``k-1`` and drops the lowest-ranked
``ratio`` fraction of them for layers ``k..``. The config is serialisable (``to_dict``/``from_dict``) so the applied
setting can be written into results JSON files and model cards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

SCORINGS = ("last", "mean")
MODALITIES = ("all", "image", "video")


@dataclass(frozen=True)
class FastVConfig:
    """What FastV prunes and where.

    ``scoring="last"`` ranks image tokens by the attention row of the last prompt token (as in the official code,
    github.com/pkunlp-icler/FastV); ``scoring="mean"`` averages the rows of every non-padding query (the paper's
    wording, §4.1). Both rows are the softmax after RoPE and masks, averaged over heads.
    """

    k: int = field(default=2, metadata={"help": "Layers 0..k-1 see every token; pruning happens before layer k."})
    ratio: float = field(
        default=0.5, metadata={"help": "Fraction of each sample's image tokens dropped (0 <= ratio < 1)."}
    )
    scoring: str = field(default="last", metadata={"help": "'last' (official code) or 'mean' (paper text)."})
    modality: str = field(
        default="all",
        metadata={"help": "Prunable tokens: 'all' (image and video, ranked together), 'image' or 'video'."},
    )

    method: ClassVar[str] = "fastv"
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise TypeError(f"FastV k must be an int, got {self.k!r} ({type(self.k).__name__}).")
        if self.k < 1:
            raise ValueError(f"FastV k={self.k} is out of range: k must be >= 1 (layers 0..k-1 see every token).")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise TypeError(f"FastV ratio must be a number, got {self.ratio!r} ({type(self.ratio).__name__}).")
        if not (math.isfinite(self.ratio) and 0.0 <= self.ratio < 1.0):
            raise ValueError(f"FastV ratio={self.ratio!r} is out of range: allowed is 0 <= ratio < 1.")
        if self.scoring not in SCORINGS:
            raise ValueError(f"FastV scoring={self.scoring!r} is unknown; allowed: {', '.join(SCORINGS)}.")
        if self.modality not in MODALITIES:
            raise ValueError(f"FastV modality={self.modality!r} is unknown; allowed: {', '.join(MODALITIES)}.")
        object.__setattr__(self, "ratio", float(self.ratio))

    def num_dropped(self, num_image_tokens: int) -> int:
        """How many of ``num_image_tokens`` tokens one sample drops: ``floor(ratio * n)``.

        The product is rounded to 9 decimals first so that e.g. ``0.3 * 10`` drops 3 tokens, not 2.
        """
        return math.floor(round(self.ratio * num_image_tokens, 9))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastVConfig:
        data = dict(data)
        method = data.pop("method", cls.method)
        version = data.pop("version", cls.version)
        if method != cls.method:
            raise ValueError(f"Not a FastV config: method={method!r}, expected {cls.method!r}.")
        if version != cls.version:
            raise ValueError(f"FastV config version {version!r} is not supported; this fastvision reads {cls.version}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown FastV config keys {unknown}; allowed: {sorted(known)}.")
        return cls(**data)
