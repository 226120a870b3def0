"""The validated configuration of intermediate-fusion attention (Hu et al., arXiv 2403.16530).

In an early-fusion U-ViT every block attends over the time token, the text tokens and the image patches together.
Intermediate fusion keeps the text out of the first and last ``v`` blocks, runs it through ``c`` new text-only blocks
first, and lets it join only the middle blocks, by joint attention (``"concat"``) or as keys and values only
(``"cross"``).

fastvision's own U-ViT knows where its text tokens are. A diffusers ``UTransformer2DModel`` receives one embedded
sequence in which the caller put the text (UniDiffuser: ``[t_img, t_text, (data_type), text, clip_img, vae_img]``),
so for it ``text_start`` and ``text_tokens`` say which positions of that sequence are the text.
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
    text_start: int | None = None
    text_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.fusion != "intermediate":
            raise ValueError(f"fusion={self.fusion!r} is not supported: allowed is 'intermediate'.")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r} is unknown: allowed is one of {CONDITIONINGS}.")
        for name in ("v", "c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an integer >= 0.")
        for name, least in (("text_start", 0), ("text_tokens", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{name}={value!r} must be None or an integer >= {least}.")
        if (self.text_start is None) != (self.text_tokens is None):
            raise ValueError(
                f"text_start={self.text_start!r} and text_tokens={self.text_tokens!r}: give both (where the text "
                "lies in a diffusers U-ViT's input sequence) or neither (fastvision's own U-ViT)."
            )

    @property
    def text_span(self) -> slice | None:
        """The positions of the text in the input sequence, for models that are told (diffusers' U-ViT)."""
        if self.text_start is None or self.text_tokens is None:
            return None
        return slice(self.text_start, self.text_start + self.text_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
