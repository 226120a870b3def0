"""Property-based tests of the selection and gather helpers: ties, rows with no image tokens, slots."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.fastv.gather import causal_mask, gather_key_axis, gather_square_mask, gather_tokens, masked_value
from fastvision.fastv.selection import compose, select_tokens, stride_scores

pytestmark = pytest.mark.engine

SETTINGS = settings(max_examples=80, deadline=None)


@st.composite
def selection_problems(draw, max_batch: int = 4, max_length: int = 12):
    """Scores from a few values (so ties are common), prunable masks (rows may have none) and per-row drop counts."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_length))
    prunable = [[draw(st.booleans()) for _ in range(length)] for _ in range(batch)]
    scores = [[float(draw(st.integers(0, 3))) for _ in range(length)] for _ in range(batch)]
    drops = [draw(st.integers(0, sum(row))) for row in prunable]
    return torch.tensor(scores), torch.tensor(prunable, dtype=torch.bool), drops


def _expected_kept(scores: list[float], prunable: list[bool], drop: int) -> list[bool]:
    """The kept flags by a plain sort: lowest score first, earlier position first among ties."""
    ranked = sorted((score, position) for position, (score, p) in enumerate(zip(scores, prunable, strict=True)) if p)
    dropped = {position for _, position in ranked[:drop]}
    return [position not in dropped for position in range(len(scores))]


@SETTINGS
@given(selection_problems())
def test_select_tokens_drops_the_lowest_scores_with_stable_ties(problem):
    scores, prunable, drops = problem
    selection = select_tokens(scores, prunable, drops)
    for b in range(prunable.shape[0]):
        expected = _expected_kept(scores[b].tolist(), prunable[b].tolist(), drops[b])
        assert selection.kept[b].tolist() == expected
    assert selection.identity == (max(drops) == 0)
    assert selection.has_slots == (not selection.identity and min(drops) != max(drops))
    assert bool(selection.kept[~prunable].all())  # text tokens are never dropped


@SETTINGS
@given(selection_problems())
def test_selection_index_lists_kept_tokens_in_order_after_the_slots(problem):
    scores, prunable, drops = problem
    selection = select_tokens(scores, prunable, drops)
    batch, length = prunable.shape
    width = length - (0 if selection.identity else min(drops))
    assert selection.index.shape == selection.valid.shape == (batch, width)
    for b in range(batch):
        index, valid = selection.index[b].tolist(), selection.valid[b].tolist()
        slots = valid.count(False)
        assert valid == [False] * slots + [True] * (width - slots)  # slots first
        assert len(set(index)) == width  # every position at most once
        kept = [position for position, flag in enumerate(selection.kept[b].tolist()) if flag]
        assert index[slots:] == kept  # kept tokens in their original order
        assert not any(selection.kept[b, position] for position in index[:slots])  # slots are dropped positions


@SETTINGS
@given(selection_problems(), st.data())
def test_compose_equals_two_selections_applied_in_turn(problem, data):
    scores, prunable, drops = problem
    first = compose(None, select_tokens(scores, prunable, drops))
    inner_prunable = torch.gather(prunable, 1, first.index) & first.valid
    inner_scores = torch.gather(scores, 1, first.index)
    inner_drops = [data.draw(st.integers(0, int(row.sum()))) for row in inner_prunable]
    second = compose(first, select_tokens(inner_scores, inner_prunable, inner_drops))
    for b in range(prunable.shape[0]):
        survivors = [p for p, v in zip(first.index[b].tolist(), first.valid[b].tolist(), strict=True) if v]
        ranked = sorted(
            (float(scores[b, p]), row, p)
            for row, p in enumerate(first.index[b].tolist())
            if first.valid[b, row] and prunable[b, p]
        )
        dropped = {p for _, _, p in ranked[: inner_drops[b]]}
        expected = [p for p in survivors if p not in dropped]
        got = [p for p, v in zip(second.index[b].tolist(), second.valid[b].tolist(), strict=True) if v]
        assert got == expected
    assert second.identity == (first.identity and max(inner_drops) == 0)


@st.composite
def gather_problems(draw):
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(1, 8))
    width = draw(st.integers(1, length))
    index = torch.stack([torch.randperm(length, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))[
        :width].sort().values for _ in range(batch)])  # fmt: skip
    valid = torch.tensor([[draw(st.booleans()) for _ in range(width)] for _ in range(batch)], dtype=torch.bool)
    shared = draw(st.booleans())  # a batch axis of 1, as RoPE tables and causal masks have
    return index, valid, shared, length


@SETTINGS
@given(gather_problems(), st.integers(1, 3))
def test_gather_tokens_picks_each_rows_positions(problem, features):
    index, _, shared, length = problem
    batch = index.shape[0]
    x = torch.randn(1 if shared else batch, length, features)
    out = gather_tokens(x, index)
    for b in range(batch):
        for j, position in enumerate(index[b].tolist()):
            assert torch.equal(out[b, j], x[0 if shared else b, position])
    ids = torch.arange(length)[None].expand(4, 1 if shared else batch, -1)  # (rows, B|1, L), as M-RoPE ids
    gathered = gather_tokens(ids, index, dim=2)
    assert torch.equal(gathered[0], index)


@SETTINGS
@given(gather_problems(), st.booleans())
def test_square_and_key_axis_masks_keep_patterns_and_mask_slots(problem, boolean):
    index, valid, shared, length = problem
    batch = index.shape[0]
    allowed = causal_mask(torch.arange(length), length).expand(1 if shared else batch, 1, -1, -1)
    if not shared:  # a padding pattern of its own per row
        allowed = allowed & (torch.rand(batch, 1, 1, length) > 0.3)
    mask = allowed if boolean else torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    square = gather_square_mask(mask, index, valid)
    keys = gather_key_axis(mask, index, valid)
    blocked = masked_value(mask)
    for b in range(batch):
        source = mask[0 if shared else b, 0]
        for i, row in enumerate(index[b].tolist()):
            for j, column in enumerate(index[b].tolist()):
                expected = source[row, column] if valid[b, j] else blocked
                assert square[b, 0, i, j] == expected
        for q in range(length):
            for j, column in enumerate(index[b].tolist()):
                assert keys[b, 0, q, j] == (source[q, column] if valid[b, j] else blocked)


@SETTINGS
@given(selection_problems())
def test_stride_keeps_evenly_spaced_tokens(problem):
    """Keep-by-position: exactly the kept count, spread so that gaps between kept ranks differ by at most one."""
    _, prunable, drops = problem
    selection = select_tokens(stride_scores(prunable, drops), prunable, drops)
    for b in range(prunable.shape[0]):
        positions = torch.nonzero(prunable[b]).flatten().tolist()
        kept_ranks = [rank for rank, position in enumerate(positions) if selection.kept[b, position]]
        assert len(kept_ranks) == len(positions) - drops[b]
        gaps = [after - before for before, after in itertools.pairwise(kept_ranks)]
        assert not gaps or max(gaps) - min(gaps) <= 1
        if kept_ranks:  # the spread reaches the end of the row: the last kept rank is the last one
            assert kept_ranks[-1] == len(positions) - 1
