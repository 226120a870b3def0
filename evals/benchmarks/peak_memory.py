"""Peak memory of one video-model step on the CPU, counted tensor by tensor.

A process's resident-set high-water mark is useless here: importing torch already sets it higher than a small
model's step, and CPU tensors have no allocator statistics. Instead a dispatch mode sees every tensor each op
returns, counts its storage's bytes once, and uncounts them when the storage is freed (a weak-reference finalizer;
torch keeps one Python object per storage). The peak of that sum is the step's own memory: activations, saved
tensors, temporaries, gradients and state, above the model and its input. torch's own
``torch.distributed._tools.mem_tracker.MemTracker`` works the same way but refuses modules called more than once
per step, which streaming does.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MODES = ("train", "inference", "stream")


def _run(model: nn.Module, video: torch.Tensor, mode: str) -> None:
    if mode == "train":
        model.train()
        model(video).logsumexp(-1).sum().backward()
    elif mode == "inference":
        with torch.no_grad():
            model.eval()(video)
    elif mode == "stream":
        if not hasattr(model, "step"):
            raise ValueError(f"{type(model).__name__} has no streaming step")
        state = None
        for index in range(video.shape[1]):
            _, state = model.eval().step(video[:, index], state)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class StorageTracker(TorchDispatchMode):
    """Counts the bytes of every tensor storage created inside the mode, until it is freed; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        inputs = {
            id(tensor.untyped_storage())
            for tensor in tree_flatten((args, kwargs))[0]
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta
        }
        for tensor in tree_flatten(output)[0]:  # views and in-place results share an input's storage: not new
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta and id(tensor.untyped_storage()) not in inputs:
                self._track(tensor)
        return output


def peak_memory_mib(model: nn.Module, video: torch.Tensor, mode: str) -> float:
    """The peak of the memory ``mode`` ("train": forward and backward; "inference"; "stream": frame by frame) holds
    above what existed before it (model, input): activations, saved tensors, temporaries, gradients, state."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    with StorageTracker() as tracker:
        _run(model, video, mode)
    model.zero_grad(set_to_none=True)
    return tracker.peak / 2**20
