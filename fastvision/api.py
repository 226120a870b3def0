"""The public entry points: ``patch``, ``unpatch``, ``patched``, ``is_patched`` and ``kept_tokens``.

``patch`` works on the instance, never the class, so a patched and an unpatched model can live side by side in one
process. It validates everything before it changes anything, records every change in a handle stored on the model,
and rolls back before raising if anything fails halfway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from torch import nn

from fastvision.fastv.compat import warn_if_untested
from fastvision.fastv.config import FastVConfig
from fastvision.fastv.engine import FastVEngine
from fastvision.fastv.record import KeptTokens
from fastvision.handle import HANDLE_ATTRIBUTE, PatchHandle, get_handle, set_attribute
from fastvision.registry import adapter_for

ModelT = TypeVar("ModelT", bound=nn.Module)
_UNSET: Any = object()


def _fastv_config(k: int | FastVConfig, ratio: float, options: dict[str, Any]) -> FastVConfig:
    options = {name: value for name, value in options.items() if value is not _UNSET}
    if isinstance(k, FastVConfig):
        if ratio is not _UNSET or options:
            raise TypeError("Pass either a FastVConfig or k/ratio/options, not both.")
        return k
    if isinstance(k, dict):
        raise TypeError("Pass a FastVConfig (FastVConfig.from_dict(d)), not a dict.")
    if options.get("schedule") is not None:
        if k is not _UNSET or ratio is not _UNSET:
            raise TypeError("Pass either schedule=[(layer, ratio), ...] or k/ratio, not both.")
        return FastVConfig(**options)
    return FastVConfig(k=2 if k is _UNSET else k, ratio=0.5 if ratio is _UNSET else ratio, **options)


def patch(
    model: ModelT,
    k: int | FastVConfig = _UNSET,
    ratio: float = _UNSET,
    *,
    scoring: str = _UNSET,
    modality: str = _UNSET,
    schedule: list[tuple[int, float]] | None = _UNSET,
    seed: int = _UNSET,
    fusion: str = _UNSET,
    v: int = _UNSET,
    c: int = _UNSET,
    conditioning: str = _UNSET,
) -> ModelT:
    """Apply FastV visual-token pruning to ``model`` in place and return it.

    ``fastvision.patch(model, k=2, ratio=0.5)`` (the defaults), ``fastvision.patch(model, FastVConfig(...))`` or
    ``fastvision.patch(model, schedule=[(2, 0.5), (16, 0.5)])``. Layers ``0..k-1`` see every token; layers ``k..``
    see each sample's top ``n - floor(ratio * n)`` image tokens and all other tokens. ``scoring`` ("last" or "mean"),
    ``modality`` ("all", "image" or "video") and ``schedule`` are the :class:`FastVConfig` fields of the same names.
    Patching a model that is already patched raises; call :func:`unpatch` first.

    For a U-ViT diffusion model (:class:`fastvision.uvit.UViT`), ``fastvision.patch(uvit, fusion="intermediate",
    v=..., c=..., conditioning="concat" | "cross")`` applies intermediate-fusion attention instead
    (``patches/uvit.py``, arXiv 2403.16530).
    """
    fusion_options = {"fusion": fusion, "v": v, "c": c, "conditioning": conditioning}
    if any(value is not _UNSET for value in fusion_options.values()) or _is_uvit(model):
        fastv_options = {"k": k, "ratio": ratio, "scoring": scoring, "modality": modality, "schedule": schedule,
                         "seed": seed}  # fmt: skip
        given = sorted(name for name, value in fastv_options.items() if value is not _UNSET)
        if given:
            raise TypeError(f"FastV options {given} do not apply to intermediate fusion (fusion, v, c, conditioning).")
        return _patch_fusion(model, {name: value for name, value in fusion_options.items() if value is not _UNSET})
    config = _fastv_config(k, ratio, {"scoring": scoring, "modality": modality, "schedule": schedule, "seed": seed})
    _check_patchable(model)
    adapter = adapter_for(model)
    adapter.check_model(model)
    num_layers = len(adapter.decoder_layers(model))
    last_layer = config.stages[-1][0]
    if last_layer >= num_layers:
        name = "k" if config.schedule is None else "schedule layer"
        raise ValueError(
            f"FastV {name}={last_layer} is out of range for a text model with {num_layers} decoder layers: "
            f"allowed is 1 <= k < {num_layers}."
        )
    adapter.check_config(model, config)
    warn_if_untested()
    handle = PatchHandle(config=config, family=adapter.family)
    try:
        engine = FastVEngine(model, adapter, config)
        engine.install(handle)
        handle.engine = engine
        set_attribute(handle, model, HANDLE_ATTRIBUTE, handle)
    except BaseException:
        handle.revert()
        raise
    return model


def _check_patchable(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastvision.patch expects a torch.nn.Module, got {type(model).__name__}.")
    if get_handle(model) is not None:
        raise RuntimeError(
            f"This model is already patched ({get_handle(model).config}); call fastvision.unpatch(model) first."
        )


def _is_uvit(model: Any) -> bool:
    from fastvision.uvit.model import UViT

    return isinstance(model, UViT)


def _patch_fusion(model: ModelT, options: dict[str, Any]) -> ModelT:
    from fastvision.patches.uvit import FusionConfig, patch_fusion

    _check_patchable(model)
    patch_fusion(model, FusionConfig(**{"fusion": "intermediate", **options}))
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


def patch_config(model: nn.Module) -> FastVConfig:
    """The config ``model`` is patched with."""
    return _require_handle(model, "patch_config").config


def _require_handle(model: nn.Module, caller: str) -> PatchHandle:
    handle = get_handle(model)
    if handle is None:
        raise ValueError(f"fastvision.{caller}: this {type(model).__name__} is not patched by fastvision.")
    return handle
