"""Config-type dispatch: a config's type picks the method, and one patch/rollback path serves every method.

As in torchao's ``quantize_(model, config)`` and PEFT's ``get_peft_model(model, config)``, ``fastvision.patch(model,
config)`` looks the method up by ``type(config)``. Each method contributes one :class:`Method` record: the keywords of
its sugar form (``patch(model, k=2, ratio=0.5)`` for FastV), a check that validates the model against the config
before anything changes, and an install step that records every change it makes in the shared undo log
(:class:`~fastvision.handle.PatchHandle`). :func:`apply` is the only place that installs and rolls back, so a patch
that fails halfway leaves the model exactly as it was, whatever the method; ``unpatch`` replays the same log.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from fastvision.handle import HANDLE_ATTRIBUTE, PatchHandle, get_handle, set_attribute

# The built-in methods register themselves when imported; they are imported on first use (cheap ``import fastvision``).
BUILTIN_METHOD_MODULES = (
    "fastvision.fastv.method",
    "fastvision.dart.method",
    "fastvision.divprune.method",
    "fastvision.visionzip.method",
    "fastvision.fusion.method",
)


@dataclass(frozen=True)
class Method:
    """One method ``fastvision.patch`` can apply.

    ``check(model, config)`` raises on a model or config the method cannot take and returns the family name stored
    in the undo log; it must not change the model. ``install(model, config, handle)`` makes the changes, recording
    each in ``handle``, and returns the method's engine (or None). ``claims(model)`` marks models this method applies
    to by default, when ``patch`` is called with no config and no keywords.
    """

    name: str
    config_type: type
    keywords: tuple[str, ...]
    from_keywords: Callable[[dict[str, Any]], Any]
    check: Callable[[nn.Module, Any], str]
    install: Callable[[nn.Module, Any, PatchHandle], Any]
    claims: Callable[[nn.Module], bool] = lambda model: False


_METHODS: dict[type, Method] = {}
_loaded = False


def register_method(method: Method) -> Method:
    """Register ``method`` under its config type; a config type may belong to one method only."""
    if method.config_type in _METHODS:
        raise ValueError(f"{method.config_type.__name__} already selects the method {method.name!r}.")
    _METHODS[method.config_type] = method
    return method


def registered_methods() -> list[Method]:
    """Every registered method, FastV (the keyword default) first."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_METHOD_MODULES:
            importlib.import_module(module)
    return list(_METHODS.values())


def method_for_config(config: Any) -> Method:
    """The method ``type(config)`` selects, or a TypeError naming the config types that select one."""
    for method in registered_methods():
        if type(config) is method.config_type:
            return method
    allowed = ", ".join(method.config_type.__name__ for method in registered_methods())
    hint = f" (build one with {allowed.split(',')[0]}.from_dict(d))" if isinstance(config, dict) else ""
    raise TypeError(f"fastvision.patch takes a method config ({allowed}) or keywords, got {config!r}{hint}.")


def method_key(method: Method) -> str:
    """The name ``method=`` selects ``method`` by: its config type's ``method`` attribute ("fastv", "dart", ...)."""
    return str(getattr(method.config_type, "method", method.name))


def method_named(name: object) -> Method:
    """The registered method ``method=name`` selects, or a ValueError listing the names."""
    for method in registered_methods():
        if method_key(method) == name:
            return method
    names = ", ".join(repr(method_key(method)) for method in registered_methods())
    raise ValueError(f"fastvision.patch method={name!r} is unknown; allowed: {names}.")


def config_from_keywords(model: nn.Module, options: dict[str, Any]) -> Any:
    """The config of the keyword form ``patch(model, **options)``.

    The method is the one ``method=`` names (``patch(model, method="dart", k=2, ratio=0.5)``), else the one that
    claims ``model`` (a U-ViT takes fusion), else the one whose keywords ``options`` use most (FastV on a tie, and
    with no keywords at all). Keywords of another method, or of none, are an error.
    """
    methods = registered_methods()
    options = dict(options)
    claimed = [method for method in methods if method.claims(model)]
    if "method" in options:
        method = method_named(options.pop("method"))
    elif claimed:
        method = claimed[0]
    else:
        method = max(methods, key=lambda candidate: len(set(options) & set(candidate.keywords)))
    stray = sorted(set(options) - set(method.keywords))
    if stray:
        owners = [other for other in methods if other is not method and set(stray) <= set(other.keywords)]
        what = f"{owners[0].name} options" if owners else "Unknown options"
        raise TypeError(f"{what} {stray} do not apply to {method.name} ({', '.join(method.keywords)}).")
    return method.from_keywords(options)


def apply(model: nn.Module, config: Any) -> nn.Module:
    """Patch ``model`` in place with ``config``'s method: check everything, install, or roll back and raise."""
    method = method_for_config(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastvision.patch expects a torch.nn.Module, got {type(model).__name__}.")
    if get_handle(model) is not None:
        raise RuntimeError(
            f"This model is already patched ({get_handle(model).config}); call fastvision.unpatch(model) first."
        )
    family = method.check(model, config)
    handle = PatchHandle(config=config, family=family)
    try:
        handle.engine = method.install(model, config, handle)
        set_attribute(handle, model, HANDLE_ATTRIBUTE, handle)
    except BaseException:
        handle.revert()
        raise
    return model
