"""U-ViT configurations, with the published MS-COCO U-ViT-S/2 (Bao et al., arXiv 2209.12152: 44.69M parameters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

POS_EMBED_INITS = ("random", "sincos")


@dataclass(frozen=True)
class UViTConfig:
    """Shape of a text-to-image U-ViT. ``image_size`` is the size the model sees (latents for latent diffusion)."""

    image_size: int = 32
    patch_size: int = 2
    in_chans: int = 4
    embed_dim: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    mlp_time_embed: bool = False
    text_dim: int = 768
    text_tokens: int = 77
    conv: bool = True
    pos_embed_init: str = "random"  # "random" (U-ViT's truncated normal) or "sincos" (see UViT)

    def __post_init__(self) -> None:
        if self.pos_embed_init not in POS_EMBED_INITS:
            allowed = ", ".join(POS_EMBED_INITS)
            raise ValueError(f"pos_embed_init={self.pos_embed_init!r} is unknown; allowed: {allowed}.")
        if self.pos_embed_init == "sincos" and self.embed_dim % 4:
            raise ValueError(f"pos_embed_init='sincos' needs embed_dim divisible by 4, got {self.embed_dim}.")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}.")
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"depth={self.depth} must be even and at least 2 (in-blocks and out-blocks pair up).")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}.")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# baofff/U-ViT configs/mscoco_uvit_small.py: latents 32x32x4, patch 2, CLIP ViT-L/14 text (77 tokens of 768).
UVIT_PRESETS: dict[str, UViTConfig] = {
    "uvit-s2-coco": UViTConfig(),
}


def uvit_preset(name: str) -> UViTConfig:
    if name not in UVIT_PRESETS:
        raise ValueError(f"Unknown U-ViT preset {name!r}; known: {', '.join(sorted(UVIT_PRESETS))}.")
    return UVIT_PRESETS[name]
