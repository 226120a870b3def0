"""Intermediate fusion as a :class:`fastvision.methods.Method` (Hu et al., arXiv 2403.16530).

``fastvision.patch(model, FusionConfig(v=..., c=..., conditioning=...))`` or the keyword form
``fastvision.patch(model, fusion="intermediate", v=..., c=..., conditioning=...)``. The per-model patch is chosen by
the model's class; today that is fastvision's own U-ViT (``fastvision.patches.fusion.uvit``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fastvision.fusion.config import FusionConfig
from fastvision.handle import PatchHandle
from fastvision.methods import Method, register_method

KEYWORDS = ("fusion", "v", "c", "conditioning")


def _is_uvit(model: nn.Module) -> bool:
    from fastvision.uvit.model import UViT

    return isinstance(model, UViT)


def fusion_config_from_keywords(options: dict[str, Any]) -> FusionConfig:
    return FusionConfig(**{"fusion": "intermediate", **options})


def check_fusion(model: nn.Module, config: FusionConfig) -> str:
    from fastvision.patches.fusion.uvit import check_fusion as check_uvit

    check_uvit(model, config)
    return "uvit"


def install_fusion(model: nn.Module, config: FusionConfig, handle: PatchHandle) -> None:
    from fastvision.patches.fusion.uvit import install_fusion as install_uvit

    install_uvit(model, config, handle)


FUSION = register_method(
    Method(
        name="intermediate fusion",
        config_type=FusionConfig,
        keywords=KEYWORDS,
        from_keywords=fusion_config_from_keywords,
        check=check_fusion,
        install=install_fusion,
        claims=_is_uvit,
    )
)
