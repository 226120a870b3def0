"""DivPrune's kept set: a greedy solution of the Max-Min Diversity Problem (arXiv 2503.02175, §3).

With ``d(i, j) = 1 - cos(x_i, x_j)`` over a sample's projected image tokens ``x``, DivPrune picks first the token
whose nearest neighbour is farthest, then repeatedly the token whose distance to its nearest already-picked token is
largest, until the budget is met. The kept tokens keep their order in the sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def divprune_macs(tokens: int, hidden: int) -> int:
    """Multiply-adds of one row's pairwise cosine similarities over ``tokens`` prunable tokens."""
    return tokens * tokens * hidden


def max_min_diverse(features: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (in pick order) of ``keep`` rows of ``features`` (n, D) chosen greedily for max-min cosine distance.

    Ties go to the earlier token.
    """
    count = features.shape[0]
    normed = F.normalize(features.float(), dim=-1)
    distance = 1.0 - normed @ normed.T
    nearest = distance.masked_fill(torch.eye(count, dtype=torch.bool, device=features.device), float("inf"))
    nearest = nearest.amin(dim=1) if count > 1 else torch.zeros(1, device=features.device)
    picked = [int(torch.argmax(nearest))]
    to_picked = distance[picked[0]].clone()
    chosen = torch.zeros(count, dtype=torch.bool, device=features.device)
    chosen[picked[0]] = True
    for _ in range(keep - 1):
        candidate = int(torch.argmax(to_picked.masked_fill(chosen, float("-inf"))))
        picked.append(candidate)
        chosen[candidate] = True
        to_picked = torch.minimum(to_picked, distance[candidate])
    return torch.tensor(picked, dtype=torch.long, device=features.device)


def divprune_scores(hidden: torch.Tensor, prunable: torch.Tensor, drops: list[int]) -> torch.Tensor:
    """(B, L) scores that make dropping each row's ``drops[b]`` lowest keep DivPrune's set: a kept token scores
    ``keep - pick order`` (the first pick highest), a dropped one 0."""
    scores = torch.zeros(prunable.shape, dtype=torch.float32, device=hidden.device)
    for row, drop in enumerate(drops):
        positions = prunable[row].nonzero().flatten()
        keep = len(positions) - drop
        if keep <= 0:
            continue
        order = max_min_diverse(hidden[row, positions], keep)
        scores[row, positions[order]] = torch.arange(keep, 0, -1, dtype=torch.float32, device=hidden.device)
    return scores
