"""Pruning before the language model: the engine's stage at layer 0.

Methods that choose tokens from what enters the language model (DivPrune, arXiv 2503.02175: the projected image
tokens) drop them for every decoder layer, layer 0 included. transformers sizes every decode step's masks and
positions from layer 0's cache length, so layer 0's cache must still span the whole prompt. While layer 0 runs a
pruned prefill, :func:`inflate_layer_zero` wraps the cache's ``update`` for layer 0: the kept tokens' keys and
values are written at their original positions into otherwise-zero tensors of the prompt's full length, and the
attention itself still sees the kept tokens only. Decode steps then mask the dropped positions at layer 0
(:func:`layer_zero_decode_mask`) and attend to the pruned cache at every later layer, as FastV's decode steps do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fastvision.fastv.gather import causal_mask, masked_value
from fastvision.fastv.selection import StageSelection


def cache_in(kwargs: dict[str, Any]) -> Any:
    """The transformers Cache a decoder layer was called with, whatever the keyword's name (None without one)."""
    from transformers import Cache

    return next((value for value in kwargs.values() if isinstance(value, Cache)), None)


def inflate_layer_zero(cache: Any, selection: StageSelection, length: int) -> Callable[[], None]:
    """Make ``cache`` store layer 0's kept keys/values at their original positions of a ``length``-token prompt.

    Returns the function that removes the wrapper (call it once layer 0 has run).
    """
    original = cache.update
    had_own = "update" in vars(cache)
    index = selection.index

    def update(key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        if layer_idx != 0:
            return original(key_states, value_states, layer_idx, *args, **kwargs)
        spread = index.to(key_states.device)[:, None, :, None]
        full_keys = key_states.new_zeros(*key_states.shape[:2], length, key_states.shape[-1])
        full_values = value_states.new_zeros(*value_states.shape[:2], length, value_states.shape[-1])
        full_keys = full_keys.scatter(2, spread.expand_as(key_states), key_states)
        full_values = full_values.scatter(2, spread.expand_as(value_states), value_states)
        original(full_keys, full_values, layer_idx, *args, **kwargs)
        return key_states, value_states

    cache.update = update

    def restore() -> None:
        if vars(cache).get("update") is update:
            if had_own:
                cache.update = original
            else:
                del cache.update

    return restore


def check_inflated(cache: Any, length: int) -> None:
    """Raise unless layer 0's cache now spans the whole prompt (the attention stored through ``cache.update``)."""
    held = cache.get_seq_length(0)
    if held != length:
        raise RuntimeError(
            f"fastvision: after a prefill pruned before the language model, layer 0's KV cache holds {held} tokens, "
            f"not the prompt's {length}; this transformers version writes the cache another way than through "
            "Cache.update. Use a method that prunes at k >= 1, or a tested transformers."
        )


def layer_zero_decode_mask(
    mask: torch.Tensor | None, selection: StageSelection, prefill_length: int, total: int, query_length: int
) -> torch.Tensor:
    """Layer 0's (B, 1, Q, total) decode mask: its cache spans the prompt, so the dropped positions are hidden."""
    device = selection.index.device
    total = mask.shape[-1] if mask is not None else total  # the keys transformers sized the mask for
    if mask is None:
        mask = causal_mask(torch.arange(total - query_length, total, device=device), total)
    batch = selection.index.shape[0]
    visible = torch.zeros(batch, total, dtype=torch.bool, device=device)
    visible[:, prefill_length:] = True
    visible.scatter_(1, selection.index, selection.valid)
    if mask.shape[0] != batch:
        mask = mask.expand(batch, *mask.shape[1:])
    return mask.masked_fill(~visible.to(mask.device)[:, None, None, :], masked_value(mask))
