"""The validated configuration of intermediate-fusion attention (Hu et al., arXiv 2403.16530).

In an early-fusion U-ViT every block attends over the time token, the text tokens and the image patches together.
Intermediate fusion keeps the text out of the first and last ``v`` blocks, runs it through ``c`` new text-only blocks
first, and lets it join only the middle blocks, by joint attention (``"concat"``) or as keys and values only
(``"cross"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CONDITIONINGS = ("concat", "cross")


@dataclass(frozen=True)
class FusionConfig:
    """Where the text joins a U-ViT: ``v`` image-only blocks at each end, ``c`` text-only blocks, and how."""

    v: int = 0
    c: int = 0
    conditioning: str = "concat"
    fusion: str = "intermediate"
    method: str = "uvit-fusion"
    version: int = 1

    def __post_init__(self) -> None:
        if self.fusion != "intermediate":
            raise ValueError(f"fusion={self.fusion!r} is not supported: allowed is 'intermediate'.")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r} is unknown: allowed is one of {CONDITIONINGS}.")
        for name in ("v", "c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an integer >= 0.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
