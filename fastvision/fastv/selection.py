"""Which tokens survive: FastV's per-sample top-k over image-token attention scores.

Each sample keeps ``n - floor(ratio * n)`` of its ``n`` image tokens (the highest-scoring ones) and every other token,
in their original order (FastV, arXiv 2403.06764, §4.2). Samples of one batch may keep different numbers of tokens
(rows with and without images, or different image counts); the shorter rows are then left-padded with *slots*:
entries that are masked out as keys, so every row computes exactly what it would compute on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Selection:
    """The kept token set of one prefill, in original sequence positions."""

    index: torch.Tensor  # (B, L') long: positions the pruned layers see, slots first
    valid: torch.Tensor  # (B, L') bool: False for slots
    kept: torch.Tensor  # (B, L) bool: which original positions are kept
    scores: torch.Tensor  # (B, L) float32: attention each position received at the scoring layer
    prunable: torch.Tensor  # (B, L) bool: image (and video) token positions
    identity: bool  # nothing was dropped in any row: the pruned layers run unchanged
    has_slots: bool  # rows keep different counts, so some rows carry masked slots


def select_tokens(scores: torch.Tensor, prunable: torch.Tensor, num_drop: list[int]) -> Selection:
    """Drop the ``num_drop[b]`` lowest-scoring prunable tokens of each row ``b``.

    Ties are broken towards dropping the earlier position (a stable sort), so selection is deterministic.
    Only Python ints (``num_drop``) decide shapes; no tensor value is read back.
    """
    batch, length = prunable.shape
    if max(num_drop) == 0:
        index = torch.arange(length, device=prunable.device).expand(batch, -1)
        valid = torch.ones(batch, length, dtype=torch.bool, device=prunable.device)
        return Selection(index, valid, valid.clone(), scores, prunable, identity=True, has_slots=False)

    ranking = torch.argsort(scores.float().masked_fill(~prunable, float("inf")), dim=1, stable=True)
    drops = torch.tensor(num_drop, device=prunable.device)
    dropped_by_rank = torch.arange(length, device=prunable.device)[None, :] < drops[:, None]
    dropped = torch.zeros_like(prunable).scatter(1, ranking, dropped_by_rank)
    kept = ~dropped

    # Stable sort on "kept": dropped positions first, then kept ones, each in original order. The last L' entries
    # are the row's kept tokens preceded by as many dropped positions as the row needs slots.
    kept_length = length - min(num_drop)
    order = torch.argsort(kept.to(torch.uint8), dim=1, stable=True)
    index = order[:, length - kept_length :]
    valid = torch.gather(kept, 1, index)
    return Selection(index, valid, kept, scores, prunable, identity=False, has_slots=min(num_drop) != max(num_drop))


def stride_scores(prunable: torch.Tensor, num_drop: list[int]) -> torch.Tensor:
    """Scores that make :func:`select_tokens` keep each row's prunable tokens at a uniform stride, in sequence order.

    The keep-by-position baseline (as compared in VTC-Bench, arXiv 2510.07143): of a row's ``n`` prunable tokens, the
    one of rank ``r`` is kept when ``floor((r + 1) m / n) > floor(r m / n)`` with ``m = n - num_drop``, which keeps
    exactly ``m`` evenly spread tokens (the first is kept when ``m = n``, every ``n/m``-th otherwise). Kept tokens score
    1 and dropped ones 0. Integer tensor arithmetic only, so it runs on the ``meta`` device too.
    """
    rank = prunable.long().cumsum(dim=1) - 1  # rank of each prunable token among its row's prunable tokens
    total = prunable.long().sum(dim=1, keepdim=True)
    keep = total - torch.tensor(num_drop, device=prunable.device)[:, None]
    total = total.clamp_min(1)
    selected = ((rank + 1) * keep) // total > (rank * keep) // total
    return (selected & prunable).float()


@dataclass
class StageSelection:
    """One stage of a schedule: its selection in the previous stage's coordinates, composed to original positions."""

    relative: Selection  # over the sequence this stage's scoring layer saw
    index: torch.Tensor  # (B, L_s) original positions the stage's layers see
    valid: torch.Tensor  # (B, L_s) False for slots
    identity: bool  # no stage so far dropped anything: the layers run unchanged
    has_slots: bool


def compose(previous: StageSelection | None, relative: Selection) -> StageSelection:
    """Express ``relative`` (chosen among the previous stage's tokens) in original sequence positions."""
    if previous is None:
        return StageSelection(relative, relative.index, relative.valid, relative.identity, relative.has_slots)
    index = torch.gather(previous.index, 1, relative.index)
    valid = torch.gather(previous.valid, 1, relative.index) & relative.valid
    return StageSelection(
        relative,
        index,
        valid,
        previous.identity and relative.identity,
        previous.has_slots or relative.has_slots,
    )
