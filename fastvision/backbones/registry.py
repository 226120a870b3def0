"""The backbone registry: ``@register_backbone`` factories, ``create_backbone`` and ``list_backbones``.

Follows timm's registry (huggingface/pytorch-image-models, ``timm/models/_registry.py``) with two differences: a
name registered twice is an error, not a warning, and the architecture files are imported on first
use, so ``import fastvision`` stays cheap.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from fastvision.backbones.base import FeatureExtractor

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_MODALITIES: dict[str, str] = {}
_ARCHITECTURE_MODULES = ("cvt", "parameternet", "repmlpnet", "trecvit", "turbovit", "vheat", "vsvig")
_LOADED = False


def register_backbone(factory: Callable[..., nn.Module] | None = None, *, modality: str = "image") -> Any:
    """Register ``factory`` under its function name; refuse a name that is already taken.

    ``modality`` ("image", "video" or "skeleton") says what input the model takes; the VLM swap accepts image models
    only.
    """

    def register(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = function.__name__
        if name in _FACTORIES:
            raise ValueError(f"backbone {name!r} is already registered; refusing to register it twice.")
        _FACTORIES[name] = function
        _MODALITIES[name] = modality
        return function

    return register(factory) if factory is not None else register


def _load_architectures() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in _ARCHITECTURE_MODULES:
            importlib.import_module(f"fastvision.backbones.{module}")


def list_backbones(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Registered names matching the shell-style ``pattern`` (and ``modality`` when given), sorted."""
    _load_architectures()
    return sorted(
        name
        for name in _FACTORIES
        if fnmatch.fnmatch(name, pattern) and (modality is None or _MODALITIES[name] == modality)
    )


def backbone_modality(name: str) -> str:
    _load_architectures()
    _check_name(name)
    return _MODALITIES[name]


def _check_name(name: str) -> None:
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {', '.join(sorted(_FACTORIES))}")


def create_backbone(
    name: str, *, num_classes: int | None = None, features_only: bool = False, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build the registered backbone ``name`` with freshly initialised weights.

    ``features_only=True`` returns a :class:`~fastvision.backbones.base.FeatureExtractor` whose forward gives one
    feature map per stage (described by its ``feature_info``). No weights are bundled for these architectures, so
    ``pretrained=True`` is refused rather than silently ignored.
    """
    _load_architectures()
    _check_name(name)
    if pretrained:
        raise ValueError(f"no pretrained weights are available for {name!r}; pass pretrained=False and train it.")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 0):
        raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
    if features_only:
        kwargs["num_classes"] = 0
    elif num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _FACTORIES[name](**kwargs)
    model.backbone_name = name
    return FeatureExtractor(model) if features_only else model
