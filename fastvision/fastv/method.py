"""FastV as a :class:`fastvision.methods.Method`: its keyword form, its checks and its install step.

``fastvision.patch(model, FastVConfig(...))`` and the sugar ``fastvision.patch(model, k=2, ratio=0.5)`` both land
here (FastV: Chen et al., arXiv 2403.06764). The family adapter (``fastvision.patches.token_reduction``) is looked up
and every setting is checked against the model before the engine installs its hooks.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fastvision.fastv.compat import warn_if_untested
from fastvision.fastv.config import FastVConfig
from fastvision.fastv.engine import FastVEngine
from fastvision.handle import PatchHandle
from fastvision.methods import Method, register_method
from fastvision.registry import adapter_for

KEYWORDS = ("k", "ratio", "scoring", "modality", "schedule", "seed")


def fastv_config_from_keywords(options: dict[str, Any]) -> FastVConfig:
    """``k``/``ratio`` default to 2/0.5; ``schedule=[(layer, ratio), ...]`` replaces them (and excludes them)."""
    if options.get("schedule") is not None:
        if "k" in options or "ratio" in options:
            raise TypeError("Pass either schedule=[(layer, ratio), ...] or k/ratio, not both.")
        return FastVConfig(**options)
    return FastVConfig(**{"k": 2, "ratio": 0.5, **options})


def check_fastv(model: nn.Module, config: FastVConfig) -> str:
    """Refuse a family fastvision has no adapter for, or settings the model cannot take; returns the family.

    The token-reduction methods that run on the FastV engine (DART) share this check.
    """
    adapter = adapter_for(model)
    adapter.check_model(model)
    num_layers = len(adapter.decoder_layers(model))
    last_layer = config.stages[-1][0]
    if last_layer >= num_layers:
        name = "k" if config.schedule is None else "schedule layer"
        label = type(config).__name__.removesuffix("Config")
        raise ValueError(
            f"{label} {name}={last_layer} is out of range for a text model with {num_layers} decoder layers: "
            f"allowed is 1 <= k < {num_layers}."
        )
    adapter.check_config(model, config)
    warn_if_untested()
    return adapter.family


def install_fastv(model: nn.Module, config: Any, handle: PatchHandle) -> FastVEngine:
    """Build the engine (which resolves every transformers internal it needs, or raises) and install its hooks."""
    engine = FastVEngine(model, adapter_for(model), config)
    engine.install(handle)
    return engine


FASTV = register_method(
    Method(
        name="FastV",
        config_type=FastVConfig,
        keywords=KEYWORDS,
        from_keywords=fastv_config_from_keywords,
        check=check_fastv,
        install=install_fastv,
    )
)
