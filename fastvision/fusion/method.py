"""Intermediate fusion as a :class:`fastvision.methods.Method` (Hu et al., arXiv 2403.16530).

``fastvision.patch(model, FusionConfig(v=..., c=..., conditioning=...))`` or the keyword form
``fastvision.patch(model, fusion="intermediate", v=..., c=..., conditioning=...)``. The per-model patch is chosen by
the model's class: fastvision's own U-ViT (``fastvision.patches.fusion.uvit``) or diffusers' ``UTransformer2DModel``
(``fastvision.patches.fusion.diffusers_uvit``, which also needs ``text_start`` and ``text_tokens``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fastvision.fusion.config import FusionConfig
from fastvision.handle import PatchHandle
from fastvision.methods import Method, register_method

KEYWORDS = ("fusion", "v", "c", "conditioning", "text_start", "text_tokens")


def _is_uvit(model: nn.Module) -> bool:
    from fastvision.patches.fusion.diffusers_uvit import is_diffusers_uvit
    from fastvision.uvit.model import UViT

    return isinstance(model, UViT) or is_diffusers_uvit(model)


def fusion_config_from_keywords(options: dict[str, Any]) -> FusionConfig:
    return FusionConfig(**{"fusion": "intermediate", **options})


def _patch_module(model: nn.Module) -> Any:
    from fastvision.patches.fusion import diffusers_uvit, uvit

    return diffusers_uvit if diffusers_uvit.is_diffusers_uvit(model) else uvit


def check_fusion(model: nn.Module, config: FusionConfig) -> str:
    module = _patch_module(model)
    module.check_fusion(model, config)
    return module.__name__.rsplit(".", 1)[-1].replace("_", "-")


def install_fusion(model: nn.Module, config: FusionConfig, handle: PatchHandle) -> None:
    _patch_module(model).install_fusion(model, config, handle)


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
