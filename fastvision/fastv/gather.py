"""Shape-only tensor plumbing: gathering kept tokens out of sequences and attention masks.

Every function here works on per-sample index tensors and never reads tensor values into Python, so the same code
runs on CPU, GPU and the ``meta`` device (used to count FLOPs of real-size models without weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fastvision.fastv.selection import StageSelection


def gather_tokens(x: torch.Tensor, index: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Select ``index[b]`` along the sequence axis ``dim`` of ``x`` for every sample ``b``.

    ``x`` has its batch axis at ``dim - 1`` (size B, or 1 for tensors shared by the batch such as RoPE tables or
    position ids) and its sequence axis at ``dim``; ``index`` is (B, L').
    """
    batch_axis = dim - 1
    batch = index.shape[0]
    if x.shape[batch_axis] != batch:
        x = x.expand(*x.shape[:batch_axis], batch, *x.shape[batch_axis + 1 :])
    view = [1] * x.dim()
    view[batch_axis], view[dim] = batch, index.shape[1]
    expanded = index.view(view).expand(*x.shape[:dim], index.shape[1], *x.shape[dim + 1 :])
    return torch.gather(x, dim, expanded.to(x.device))


def masked_value(mask: torch.Tensor) -> bool | float:
    """The value that forbids attention: ``False`` in boolean masks, the dtype minimum in additive ones."""
    return False if mask.dtype == torch.bool else torch.finfo(mask.dtype).min


def causal_mask(query_positions: torch.Tensor, key_length: int) -> torch.Tensor:
    """Boolean (1, 1, Q, K) mask: a query at position p may attend to keys 0..p."""
    keys = torch.arange(key_length, device=query_positions.device)
    return (keys[None, :] <= query_positions[:, None])[None, None]


def gather_square_mask(mask: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Prefill: restrict a (B|1, 1, L, L) mask to the kept tokens on both axes; invalid (padding) slots are masked.

    Kept tokens keep their original positions, so any pattern in the original mask (causal, padding, sliding window)
    carries over exactly.
    """
    batch, kept = index.shape
    if mask.shape[0] != batch:
        mask = mask.expand(batch, *mask.shape[1:])
    index = index.to(mask.device)
    rows = torch.gather(mask, 2, index[:, None, :, None].expand(batch, mask.shape[1], kept, mask.shape[3]))
    square = torch.gather(rows, 3, index[:, None, None, :].expand(batch, mask.shape[1], kept, kept))
    return square.masked_fill(~valid.to(mask.device)[:, None, None, :], masked_value(mask))


def gather_key_axis(mask: torch.Tensor, key_index: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Decode: restrict the key axis of a (B|1, 1, Q, S) mask to the keys the pruned cache layers hold."""
    batch, kept = key_index.shape
    if mask.shape[0] != batch:
        mask = mask.expand(batch, *mask.shape[1:])
    key_index = key_index.to(mask.device)
    sliced = torch.gather(mask, 3, key_index[:, None, None, :].expand(batch, mask.shape[1], mask.shape[2], kept))
    return sliced.masked_fill(~key_valid.to(mask.device)[:, None, None, :], masked_value(mask))


def prefill_mask(mask: torch.Tensor | None, selection: StageSelection, length: int) -> torch.Tensor:
    """The stage's (B, 1, L_s, L_s) mask, gathered from the original (B|1, 1, L, L) mask (or causal when None)."""
    if mask is None:
        mask = causal_mask(torch.arange(length, device=selection.index.device), length)
    return gather_square_mask(mask, selection.index, selection.valid)


def map_hidden_states(
    args: tuple, kwargs: dict[str, Any], fn: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[tuple, dict]:
    """Apply ``fn`` to the hidden states, whether passed positionally (as transformers does) or by keyword."""
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = fn(kwargs["hidden_states"])
    return args, kwargs
