"""DART as a :class:`fastvision.methods.Method`, run by the FastV engine (Wen et al., arXiv 2502.11494).

``fastvision.patch(model, DARTConfig(k=2, ratio=0.75))`` or ``fastvision.patch(model, method="dart", k=2,
ratio=0.75)``. DART changes only which tokens are kept, so it reuses the engine's hooks: SDPA in every layer, the
pruned KV cache, padded batches and the family adapters of ``fastvision.patches.token_reduction``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fastvision.dart.config import DARTConfig
from fastvision.fastv.method import check_fastv, install_fastv
from fastvision.methods import Method, register_method
from fastvision.registry import adapter_for

KEYWORDS = ("k", "ratio", "image_pivots", "text_pivots", "modality")


def check_dart(model: nn.Module, config: DARTConfig) -> str:
    """The engine's checks, and the final norm DART compares hidden states after."""
    family = check_fastv(model, config)
    language_model = adapter_for(model).language_model(model)
    if not isinstance(getattr(language_model, "norm", None), nn.Module):
        raise ValueError(
            f"DART compares hidden states after the text model's final norm, but {type(language_model).__name__} "
            "has no module named 'norm'."
        )
    return family


def dart_config_from_keywords(options: dict[str, Any]) -> DARTConfig:
    return DARTConfig(**options)


DART = register_method(
    Method(
        name="DART",
        config_type=DARTConfig,
        keywords=KEYWORDS,
        from_keywords=dart_config_from_keywords,
        check=check_dart,
        install=install_fastv,
    )
)
