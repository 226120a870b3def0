"""U-ViT text-to-image diffusion models (arXiv 2209.12152), the target of intermediate-fusion attention."""

from fastvision.uvit.config import UVIT_PRESETS, UViTConfig, uvit_preset
from fastvision.uvit.model import UViT

__all__ = ["UVIT_PRESETS", "UViT", "UViTConfig", "uvit_preset"]
