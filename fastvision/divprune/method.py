"""DivPrune as a :class:`fastvision.methods.Method`, run by the token-reduction engine at layer 0 (arXiv 2503.02175).

``fastvision.patch(model, DivPruneConfig(ratio=0.9))`` or ``fastvision.patch(model, method="divprune", ratio=0.9)``.
"""

from __future__ import annotations

from typing import Any

from fastvision.divprune.config import DivPruneConfig
from fastvision.fastv.method import check_fastv, install_fastv
from fastvision.methods import Method, register_method

KEYWORDS = ("ratio", "modality")


def divprune_config_from_keywords(options: dict[str, Any]) -> DivPruneConfig:
    return DivPruneConfig(**options)


DIVPRUNE = register_method(
    Method(
        name="DivPrune",
        config_type=DivPruneConfig,
        keywords=KEYWORDS,
        from_keywords=divprune_config_from_keywords,
        check=check_fastv,  # the engine's checks are all DivPrune needs
        install=install_fastv,
    )
)
