"""Intermediate-fusion attention for text-to-image diffusion models (Hu et al., arXiv 2403.16530).

:class:`FusionConfig` selects the method in ``fastvision.patch(model, FusionConfig(...))``; the per-model patches
live in ``fastvision.patches.fusion`` (``uvit.py`` for fastvision's own U-ViT, ``diffusers_uvit.py`` for diffusers'
``UTransformer2DModel``).
"""

from fastvision.fusion.config import CONDITIONINGS, FusionConfig

__all__ = ["CONDITIONINGS", "FusionConfig"]
