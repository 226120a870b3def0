"""The one attention row FastV needs, computed beside SDPA rather than instead of it.

The official FastV code switches every layer to eager attention with ``output_attentions=True`` to read one row
(github.com/pkunlp-icler/FastV, issues #25 and #31), which is why its speed-up falls well short of its FLOPs saving.
Here only the scoring layer's attention module is routed through :func:`fastvision_attention`, a registered
transformers attention function that first computes the softmax rows it needs from the post-RoPE queries and keys
and then calls the model's own attention function (SDPA or eager) unchanged.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION_NAME = "fastvision_scoring"

# Query rows are processed in chunks so that "mean" scoring never holds a full L x L probability matrix per head.
_MAX_CHUNK_ELEMENTS = 1 << 25


@dataclass
class ScoringSite:
    """What the scoring wrapper needs to know about one patched attention module."""

    observer: Callable[[nn.Module, torch.Tensor, torch.Tensor, Any, float], None]
    base_config: Any  # the model's shared text config: its attention implementation is the one delegated to
    eager_attention: Callable[..., Any]


_SITES: weakref.WeakKeyDictionary[nn.Module, ScoringSite] = weakref.WeakKeyDictionary()


def fastvision_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention function registered as ``"fastvision_scoring"``: observe q/k, then run the model's own attention."""
    site = _SITES.get(module)
    if site is None:
        raise RuntimeError(
            "fastvision_scoring attention was called on a module that fastvision did not patch; "
            "call fastvision.unpatch(model) and patch again."
        )
    scaling = kwargs["scaling"] if "scaling" in kwargs else module.scaling  # CLIP passes it, LLaMA has it
    site.observer(module, query, key, attention_mask, scaling)
    implementation = site.base_config._attn_implementation
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, site.eager_attention)
    return attention(module, query, key, value, attention_mask, **kwargs)


def register_scoring_attention() -> None:
    """Register the wrapper with transformers (idempotent)."""
    if ATTENTION_NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTENTION_NAME, fastvision_attention)


def attach_site(module: nn.Module, site: ScoringSite) -> Callable[[], None]:
    """Route ``module`` through the wrapper; returns the function that detaches it."""
    _SITES[module] = site
    return lambda: _SITES.pop(module, None)


def _allowed_rows(mask: torch.Tensor | None, rows: torch.Tensor, key_length: int) -> torch.Tensor:
    """Boolean (B, 1, R, K) visibility of keys for the query positions ``rows`` (B, R)."""
    if mask is None:
        keys = torch.arange(key_length, device=rows.device)
        return (keys[None, None, :] <= rows[:, :, None])[:, None]
    if mask.shape[0] != rows.shape[0]:
        mask = mask.expand(rows.shape[0], *mask.shape[1:])
    picked = torch.gather(
        mask, 2, rows[:, None, :, None].expand(rows.shape[0], mask.shape[1], rows.shape[1], key_length)
    )
    if picked.dtype == torch.bool:
        return picked
    return picked > torch.finfo(picked.dtype).min / 2


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float, rows: torch.Tensor
) -> torch.Tensor:
    """Head-averaged softmax attention rows (B, R, K) of the queries at positions ``rows`` (B, R), in float32.

    Grouped-query attention is handled by grouping query heads over their shared key head instead of repeating keys.
    """
    batch, heads, _, head_dim = query.shape
    kv_heads, key_length = key.shape[1], key.shape[2]
    picked = torch.gather(query, 2, rows[:, None, :, None].expand(batch, heads, rows.shape[1], head_dim))
    grouped = picked.view(batch, kv_heads, heads // kv_heads, rows.shape[1], head_dim).float()
    logits = torch.einsum("bgqrd,bgkd->bgqrk", grouped, key.float()) * scaling
    allowed = _allowed_rows(mask, rows, key_length)  # (B, 1, R, K)
    logits = logits.masked_fill(~allowed[:, :, None], float("-inf"))
    probabilities = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return probabilities.mean(dim=(1, 2))


def attention_received(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    scoring: str,
    last_positions: torch.Tensor,
    query_valid: torch.Tensor,
) -> torch.Tensor:
    """Attention each key position receives (B, K), the FastV ranking signal.

    ``scoring="last"``: the row of each sample's last prompt token (``last_positions``, (B,)).
    ``scoring="mean"``: the mean over every valid (non-padding) query row (``query_valid``, (B, L)).
    """
    if scoring == "last":
        return attention_probabilities(query, key, mask, scaling, last_positions[:, None])[:, 0]
    batch, heads, length, _ = query.shape
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(1, batch * heads * key.shape[2]))
    total = torch.zeros(batch, key.shape[2], dtype=torch.float32, device=query.device)
    weights = query_valid.to(device=query.device, dtype=torch.float32)
    for start in range(0, length, chunk):
        rows = torch.arange(start, min(length, start + chunk), device=query.device).expand(batch, -1)
        probabilities = attention_probabilities(query, key, mask, scaling, rows)  # (B, R, K)
        total += torch.einsum("brk,br->bk", probabilities, weights[:, start : start + chunk])
    return total / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


__all__ = [
    "ATTENTION_NAME",
    "ScoringSite",
    "attach_site",
    "attention_received",
    "fastvision_attention",
    "register_scoring_attention",
]


def route_scoring(handle: Any, module: nn.Module, observer: Callable[..., None], eager: Any) -> None:
    """Give ``module`` its own config copy whose attention implementation is the scoring wrapper (undo in ``handle``).

    Only this module's attention goes through :func:`fastvision_attention`; every other layer keeps the model's own.
    """
    from fastvision.handle import set_attribute

    base_config = module.config
    handle.record("attach scoring site", attach_site(module, ScoringSite(observer, base_config, eager)))
    routed = copy.copy(base_config)
    routed._attn_implementation_internal = ATTENTION_NAME
    set_attribute(handle, module, "config", routed)
