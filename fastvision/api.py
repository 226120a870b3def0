"""The public entry points: ``patch``, ``unpatch``, ``patched``, ``is_patched`` and ``kept_tokens``.

``patch`` works on the instance, never the class, so a patched and an unpatched model can live side by side in one
process. The config's type picks the method (:mod:`fastvision.methods`), which validates everything before it changes
anything; every change goes into one undo log stored on the model, replayed by ``unpatch`` and by a failed patch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from torch import nn

from fastvision.fastv.config import FastVConfig
from fastvision.fastv.record import KeptTokens
from fastvision.handle import PatchHandle, get_handle
from fastvision.methods import apply, config_from_keywords

ModelT = TypeVar("ModelT", bound=nn.Module)


def patch(model: ModelT, config: Any = None, **options: Any) -> ModelT:
    """Apply a method to ``model`` in place and return it; the config's type picks the method.

    - FastV visual-token pruning (arXiv 2403.06764): ``fastvision.patch(model, FastVConfig(...))``, or the keyword
      form ``fastvision.patch(model, k=2, ratio=0.5)`` (the defaults; also ``scoring``, ``modality``, ``schedule``
      and ``seed``, the :class:`FastVConfig` fields of the same names), or
      ``fastvision.patch(model, schedule=[(2, 0.5), (16, 0.5)])``. Layers ``0..k-1`` see every token; layers ``k..``
      see each sample's top ``n - floor(ratio * n)`` image tokens and all other tokens.
    - Intermediate-fusion attention for a U-ViT diffusion model (arXiv 2403.16530):
      ``fastvision.patch(uvit, FusionConfig(v=..., c=..., conditioning="concat" | "cross"))`` or
      ``fastvision.patch(uvit, fusion="intermediate", v=..., c=..., conditioning=...)``; on diffusers'
      ``UTransformer2DModel`` also ``text_start=..., text_tokens=...``, where the text lies in its input sequence.

    Everything is checked before anything changes, and every change is recorded in one undo log stored on the model
    (:mod:`fastvision.methods`): a patch that fails halfway rolls back before it raises. Patching a model that is
    already patched raises; call :func:`unpatch` first.
    """
    if config is None:
        config = config_from_keywords(model, options)
    elif options:
        raise TypeError(f"Pass either a config object or keywords {sorted(options)}, not both.")
    apply(model, config)
    return model


def unpatch(model: ModelT) -> ModelT:
    """Undo :func:`patch` exactly: every hook, routed attention and wrapper is removed."""
    handle = _require_handle(model, "unpatch")
    handle.revert()
    return model


def is_patched(model: nn.Module) -> bool:
    return get_handle(model) is not None


@contextmanager
def patched(model: ModelT, *args: Any, **kwargs: Any) -> Iterator[ModelT]:
    """``with fastvision.patched(model, k=2, ratio=0.5): ...``: :func:`patch` (same arguments) for the block only."""
    patch(model, *args, **kwargs)
    try:
        yield model
    finally:
        unpatch(model)


def kept_tokens(model: nn.Module) -> KeptTokens | None:
    """The kept-token record of this thread's latest prefill of ``model`` (None if it had no image tokens)."""
    handle = _require_handle(model, "kept_tokens")
    if handle.engine is None:
        raise ValueError(f"fastvision.kept_tokens: this model is patched with {handle.config}, not FastV.")
    return handle.engine.last_kept()


def patch_config(model: nn.Module) -> FastVConfig | Any:
    """The config ``model`` is patched with (a :class:`FastVConfig`, or the config of the method applied)."""
    return _require_handle(model, "patch_config").config


def _require_handle(model: nn.Module, caller: str) -> PatchHandle:
    handle = get_handle(model)
    if handle is None:
        raise ValueError(f"fastvision.{caller}: this {type(model).__name__} is not patched by fastvision.")
    return handle
