"""The engine's scorings that read hidden states rather than attention probabilities.

DART (arXiv 2502.11494) ranks by duplication against pivots, from the key norms of layer ``k-1`` and the hidden
states entering layer ``k``; DivPrune (arXiv 2503.02175) by diversity, from the tokens entering the language model
(layer 0). Both choose their kept set in the pre-hook of their first pruned layer, where the hidden states arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastvision.dart.selection import dart_scores, key_norms
from fastvision.divprune.selection import divprune_scores
from fastvision.fastv.config import dropped_count

HIDDEN_STATE_SCORINGS = ("dart", "divprune", "visionzip")  # visionzip: chosen in the tower, applied here
BEFORE_LAYER_ZERO_SCORINGS = ("divprune", "visionzip")  # prune before the language model: no scoring layer to route

__all__ = ["BEFORE_LAYER_ZERO_SCORINGS", "HIDDEN_STATE_SCORINGS", "hidden_state_scores", "key_norms"]


def hidden_state_scores(
    config: Any, context: Any, hidden: torch.Tensor, norm: nn.Module, vision_scores: Callable[..., Any] | None
) -> tuple[torch.Tensor, list[int]]:
    """(B, L) scores and each row's drop count, for a prefill ``context`` at its first pruned layer's input."""
    prunable = context.prunable.to(hidden.device)
    if config.scoring == "dart":
        if context.pivot_norms is None:
            raise RuntimeError(
                "DART: the scoring layer (k-1) did not run before layer k (its attention never called the routed "
                "attention function: transformers may dispatch it differently)."
            )
        return dart_selection(config, context, hidden, norm), context.pending_drops
    if config.scoring == "divprune":
        drops = [dropped_count(config.stages[0][1], remaining) for remaining in context.remaining]
        return divprune_scores(hidden, prunable, drops), drops
    # VisionZip chose in the vision tower, per image: its kept positions come from the tower's hooks
    scores = vision_scores(context.masks.get("image", prunable)).to(hidden.device)
    return scores, [int(count) for count in (prunable & (scores <= 0)).sum(dim=1).tolist()]


def dart_selection(config: Any, context: Any, hidden: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """DART's scores for one prefill context: pivots among the image tokens and the prompt's text after them."""
    prunable = context.prunable.to(hidden.device)
    visual = prunable.clone()
    for mask in context.masks.values():
        visual |= mask.to(hidden.device)
    positions = torch.arange(prunable.shape[1], device=hidden.device)
    in_prompt = positions[None, :] <= context.last_positions.to(hidden.device)[:, None]
    text = context.query_valid.to(hidden.device) & ~visual & (prunable.long().cumsum(dim=1) > 0) & in_prompt
    norms = context.pivot_norms.to(hidden.device)
    return dart_scores(hidden, norms, prunable, text, context.pending_drops, norm, config.image_pivots,
                       config.text_pivots)  # fmt: skip
