"""Decode steps on a cache that a pruned prefill filled.

Pruned layers hold fewer keys than layer 0, whose length transformers sizes the decode masks from; so the mask's key
axis is gathered to ``cat(kept positions, arange(prefill_length, total))`` for those layers. Before each decode step
the cache's per-layer lengths are checked against what the prefill kept: a cache that does not hold what the engine
expects (another transformers cache layout, a cache pruned by a forward the engine did not see) raises instead of
attending to the wrong keys.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import torch

from fastvision.fastv.gather import causal_mask, gather_key_axis
from fastvision.fastv.selection import StageSelection


@dataclass
class DecodeState:
    """What decode steps need to know about a cache that a pruned prefill filled: each stage's kept positions."""

    stages: list[StageSelection]
    prefill_length: int


def check_cache_lengths(
    cache: Any, stage_layers: list[int], num_layers: int, state: DecodeState | None, past: int
) -> None:
    """Raise unless every pruned layer holds exactly the keys the engine's decode masks assume.

    ``past`` is layer 0's length (never pruned). With no recorded state, every layer must hold as many as layer 0.
    """
    for layer in range(max(stage_layers[0], 1), num_layers):  # a layer-0 stage keeps layer 0 prompt-long
        actual = cache.get_seq_length(layer)
        if state is None:
            expected = past
        else:
            stage = bisect.bisect_right(stage_layers, layer) - 1
            expected = state.stages[stage].index.shape[1] + past - state.prefill_length
        if actual != expected:
            origin = "no pruned prefill was recorded for this cache" if state is None else "the prefill kept fewer"
            raise RuntimeError(
                f"FastV: the KV cache of decoder layer {layer} holds {actual} tokens, but this decode step expects "
                f"{expected} ({origin}; layer 0 holds {past}). The cache was changed outside the patched model's "
                "forward, or this transformers version lays the cache out differently; start a new cache."
            )


def decode_mask(
    mask: torch.Tensor | None, state: DecodeState, selection: StageSelection, total: int, query_length: int
) -> torch.Tensor:
    """The (B, 1, Q, kept + fresh) mask of a pruned stage's layers in a decode step."""
    total = mask.shape[-1] if mask is not None else total
    device = selection.index.device
    if mask is None:
        mask = causal_mask(torch.arange(total - query_length, total, device=device), total)
    batch = selection.index.shape[0]
    fresh = torch.arange(state.prefill_length, total, device=device).expand(batch, -1)
    key_index = torch.cat([selection.index, fresh], dim=1)
    key_valid = torch.cat([selection.valid, torch.ones_like(fresh, dtype=torch.bool)], dim=1)
    return gather_key_axis(mask, key_index, key_valid)
