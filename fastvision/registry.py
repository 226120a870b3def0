"""``model_type`` -> family adapter table, filled by the modules of ``fastvision.patches.token_reduction``.

The built-in family modules are imported on first lookup, so ``import fastvision`` stays cheap. Registering a
``model_type`` twice is an error rather than a silent override.
"""

from __future__ import annotations

import importlib
from typing import Any

_ADAPTERS: dict[str, Any] = {}
_BUILTINS_LOADED = False


def register_adapter(adapter: Any) -> Any:
    """Register ``adapter`` for each of its ``model_types``; refuse names that are already taken."""
    taken = [name for name in adapter.model_types if name in _ADAPTERS]
    if taken:
        raise ValueError(f"model_type(s) {taken} already have a fastvision adapter; refusing to register twice.")
    for name in adapter.model_types:
        _ADAPTERS[name] = adapter
    return adapter


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("fastvision.patches.token_reduction")


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values ``fastvision.patch`` accepts."""
    _load_builtins()
    return sorted(_ADAPTERS)


def adapter_for(model: Any) -> Any:
    """The adapter for ``model``, or a ValueError that lists the supported families."""
    _load_builtins()
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _ADAPTERS:
        raise ValueError(
            f"fastvision cannot patch {type(model).__name__} (model_type={model_type!r}); "
            f"supported model types: {', '.join(sorted(_ADAPTERS))}."
        )
    return _ADAPTERS[model_type]
