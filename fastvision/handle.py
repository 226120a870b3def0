"""The record of every change ``fastvision.patch`` makes to one model instance.

Each change is registered together with the function that undoes it. ``unpatch`` replays the record backwards, and a
patch that fails halfway does the same before it raises, so a model is either fully patched or exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

HANDLE_ATTRIBUTE = "_fastvision_patch"


@dataclass
class PatchHandle:
    """Undo log of one patch, stored on the patched model as ``model._fastvision_patch``."""

    config: Any
    family: str
    engine: Any = None
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list, repr=False)

    def record(self, description: str, undo: Callable[[], None]) -> None:
        """Remember a change that has just been made and how to revert it."""
        self._undo.append((description, undo))

    def revert(self) -> None:
        """Undo every recorded change, newest first. Every undo runs even if an earlier one fails."""
        errors: list[str] = []
        while self._undo:
            description, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep reverting: a half-reverted model is the worst outcome
                errors.append(f"{description}: {exc!r}")
        if errors:
            raise RuntimeError("fastvision could not revert every change: " + "; ".join(errors))


def get_handle(model: nn.Module) -> PatchHandle | None:
    return model.__dict__.get(HANDLE_ATTRIBUTE)


def set_attribute(handle: PatchHandle, obj: Any, name: str, value: Any) -> None:
    """Set ``obj.name = value`` as an instance attribute and record how to restore what was there."""
    had_own = name in vars(obj)
    previous = vars(obj).get(name)
    setattr(obj, name, value)

    def undo() -> None:
        if had_own:
            setattr(obj, name, previous)
        else:
            delattr(obj, name)

    handle.record(f"set {type(obj).__name__}.{name}", undo)
