"""DART's kept set: pivots by key norm, then the tokens least similar to each pivot (arXiv 2502.11494, §3).

The selection runs in two places of one prefill. At layer ``k-1``'s attention, :func:`key_norms` reads each
token's pivot score from the post-RoPE keys. At the input of layer ``k``, :func:`dart_scores` compares the hidden
states (after the model's final norm, as the authors' code does) with the pivots' and picks the kept set. It needs
no attention probabilities, so it works with any attention kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def key_norms(key: torch.Tensor) -> torch.Tensor:
    """(B, L) L1 norm of each position's key over every head and channel, from a (B, heads, L, head_dim) key.

    The authors concatenate the heads after repeating the grouped key heads; the repetition multiplies every norm by
    the same factor, so the ranking is the same.
    """
    return key.detach().float().abs().sum(dim=(1, 3))


def pivot_budgets(remaining: int, pivots: int) -> list[int]:
    """Split ``remaining`` kept tokens among ``pivots`` pivots as evenly as integers allow (earlier pivots get less)."""
    return [(index + 1) * remaining // pivots - index * remaining // pivots for index in range(pivots)]


def dart_similarity_macs(candidates: int, hidden: int, pivots: int) -> int:
    """Multiply-adds of one row's cosine similarities: ``candidates`` tokens against ``pivots`` pivots."""
    return candidates * hidden * pivots


def dart_scores(
    hidden: torch.Tensor,
    norms: torch.Tensor,
    prunable: torch.Tensor,
    text: torch.Tensor,
    drops: list[int],
    norm: nn.Module,
    image_pivots: int,
    text_pivots: int,
) -> torch.Tensor:
    """(B, L) scores, 1 on the tokens DART keeps and 0 elsewhere, so that dropping the ``drops[b]`` lowest of each
    row's prunable tokens keeps exactly DART's set.

    ``hidden`` (B, L, D) enters layer ``k``; ``norms`` (B, L) are the pivot scores from :func:`key_norms`;
    ``text`` (B, L) marks the text tokens that may be text pivots. Per row, the ``image_pivots`` prunable tokens and
    the ``text_pivots`` text tokens with the largest norms are the pivots (fewer where a row has fewer). Image pivots
    are kept; the other ``n - drop - pivots`` kept tokens are shared among all pivots in order (image pivots, then
    text pivots, each by decreasing norm), and each pivot takes, from the candidates no earlier pivot took, those
    with the lowest cosine similarity to it.
    """
    scores = torch.zeros(prunable.shape, dtype=torch.float32, device=hidden.device)
    for row, drop in enumerate(drops):
        positions = prunable[row].nonzero().flatten()
        keep = len(positions) - drop
        if drop == 0:
            scores[row, positions] = 1.0
            continue
        image_order = torch.argsort(norms[row, positions], descending=True, stable=True)
        chosen_image = positions[image_order[: min(image_pivots, keep)]]
        text_positions = text[row].nonzero().flatten()
        text_order = torch.argsort(norms[row, text_positions], descending=True, stable=True)
        chosen_text = text_positions[text_order[:text_pivots]]
        pivots = torch.cat([chosen_image, chosen_text])
        is_candidate = torch.ones(len(positions), dtype=torch.bool, device=positions.device)
        is_candidate[image_order[: len(chosen_image)]] = False
        candidates = positions[is_candidate]
        features = F.normalize(norm(hidden[row, torch.cat([pivots, candidates])]).float(), dim=-1)
        similarity = features[len(pivots) :] @ features[: len(pivots)].T  # (candidates, pivots)
        available = torch.ones(len(candidates), dtype=torch.bool, device=positions.device)
        kept = [chosen_image]
        for column, budget in enumerate(pivot_budgets(keep - len(chosen_image), len(pivots))):
            if budget == 0:
                continue
            ranked = similarity[:, column].masked_fill(~available, float("inf"))
            picked = torch.argsort(ranked, stable=True)[:budget]
            available[picked] = False
            kept.append(candidates[picked])
        scores[row, torch.cat(kept)] = 1.0
    return scores
