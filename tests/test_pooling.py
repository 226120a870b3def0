"""The spatial-pooling baseline (scoring="pool"): exact tiling, an independent reference, and the FastV contract."""

from __future__ import annotations

import pytest
import torch

import fastvision
from fastvision.fastv.pooling import grid_bins, merge_tokens, pool_groups
from fastvision.testing import IMAGE_TOKEN_ID, llava_prompt, tiny_llava
from tests.families import FAMILIES, batch
from tests.reference import _run_layers, merged_embeddings

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(("height", "width"), [(12, 12), (4, 4), (3, 5), (1, 7)])
def test_bins_tile_the_grid_into_exactly_the_kept_count(height, width):
    """Every cell is in one bin, there are exactly m bins, each a non-empty rectangle whose first cell is its corner."""
    for kept in range(1, height * width + 1):
        bins, firsts = grid_bins(height, width, kept)
        assert len(firsts) == kept and sorted(set(bins)) == list(range(kept))
        for number, first in enumerate(firsts):
            cells = [cell for cell, owner in enumerate(bins) if owner == number]
            rows = {cell // width for cell in cells}
            columns = {cell % width for cell in cells}
            assert len(cells) == len(rows) * len(columns)  # a full rectangle
            assert first == min(cells) == min(rows) * width + min(columns)
    assert grid_bins(12, 12, 36)[0][:14] == (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 0, 0)  # 2x2 windows at 75%


def test_bins_refuse_an_impossible_count():
    with pytest.raises(ValueError, match=r"into 17 bins: allowed is 1\.\.16"):
        grid_bins(4, 4, 17)


def test_groups_share_the_kept_count_among_images():
    prunable = torch.zeros(1, 40, dtype=torch.bool)
    prunable[0, 2:18] = prunable[0, 20:36] = True  # two 4x4 images
    scores, group = pool_groups(prunable, [24], (4, 4))  # keep 8 of 32: 4 per image, 2x2 windows
    carriers = torch.nonzero(scores[0]).flatten().tolist()
    assert carriers == [2, 4, 10, 12, 20, 22, 28, 30]
    assert group[0, :2].tolist() == [0, 1] and group[0, 36:].tolist() == list(range(36, 40))
    assert group[0, 2:18].tolist() == [2, 2, 4, 4, 2, 2, 4, 4, 10, 10, 12, 12, 10, 10, 12, 12]


def test_groups_refuse_a_partial_image():
    prunable = torch.zeros(1, 20, dtype=torch.bool)
    prunable[0, 2:14] = True
    with pytest.raises(NotImplementedError, match="run of 12 image tokens, not a multiple of 16"):
        pool_groups(prunable, [6], (4, 4))


def test_merge_averages_bins_and_leaves_singletons_bit_identical():
    hidden = torch.randn(2, 6, 3)
    group = torch.tensor([[0, 1, 1, 3, 3, 3], [0, 1, 2, 3, 4, 5]])
    merged = merge_tokens(hidden, group)
    torch.testing.assert_close(merged[0, 1], hidden[0, 1:3].mean(0))
    torch.testing.assert_close(merged[0, 3], hidden[0, 3:6].mean(0))
    assert torch.equal(merged[0, 0], hidden[0, 0]) and torch.equal(merged[1], hidden[1])


@pytest.fixture(scope="module")
def model():
    return tiny_llava("llama")  # 32x32 images, 8x8 patches: a 4x4 grid of 16 image tokens


def _single(model, seed: int = 3):
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8, 9])])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "pixel_values": pixels}


def _reference_pool(model, inputs, k: int, windows: list[list[int]]):
    """Logits of a manual loop: layers < k on every token, then each window's image tokens averaged into its first."""
    ids = inputs["input_ids"]
    hidden = merged_embeddings(model, ids, inputs["pixel_values"])
    length = ids.shape[1]
    positions = torch.arange(length)
    every = torch.ones(length, dtype=torch.bool)
    layers = model.model.language_model.layers
    hidden = _run_layers(model, hidden, positions, every, layers[:k])
    images = torch.nonzero(ids[0] == IMAGE_TOKEN_ID).flatten().tolist()
    dropped = set()
    for window in windows:
        members = [images[cell] for cell in window]
        hidden[0, members[0]] = hidden[0, members].mean(0)
        dropped.update(members[1:])
    keep = [position for position in range(length) if position not in dropped]
    hidden = _run_layers(model, hidden[:, keep], positions[keep], every[keep], layers[k:])
    return model.lm_head(model.model.language_model.norm(hidden))[0, -1], [images[w[0]] for w in windows]


@torch.no_grad()
def test_pool_equals_an_independent_reference(model):
    """At ratio 0.75 a 4x4 grid pools into its four 2x2 windows, each merged into its top-left token."""
    inputs = _single(model)
    windows = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    expected, carriers = _reference_pool(model, inputs, 2, windows)
    with fastvision.patched(model, k=2, ratio=0.75, scoring="pool"):
        logits = model(**inputs).logits[0, -1]
        assert fastvision.kept_tokens(model).kept_image_positions(0).tolist() == carriers
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_pool_ratio_zero_and_unpatch_are_bit_identical(model):
    inputs = _single(model)
    baseline = model(**inputs).logits
    with fastvision.patched(model, k=2, ratio=0.0, scoring="pool"):
        assert torch.equal(model(**inputs).logits, baseline)
    with fastvision.patched(model, k=2, ratio=0.5, scoring="pool"):
        assert not torch.equal(model(**inputs).logits, baseline)
    assert torch.equal(model(**inputs).logits, baseline)


LLAVA = FAMILIES["llava"]
ROWS = [([5, 6], ["image"], [7, 8, 9]), ([5], [], [7, 8]), ([5, 12], ["image", "image"], [7])]


def _greedy(model, inputs, steps=3):
    out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=0, suppress_tokens=[IMAGE_TOKEN_ID])  # fmt: skip
    return out.sequences, torch.stack(out.logits, dim=1)


@pytest.fixture(scope="module")
def llava():
    return LLAVA.make()


@torch.no_grad()
def test_pool_batched_rows_equal_single_runs(llava):
    with fastvision.patched(llava, k=2, ratio=0.5, scoring="pool"):
        batched, batched_logits = _greedy(llava, batch(LLAVA, llava, ROWS))
        for index, row in enumerate(ROWS):
            single, single_logits = _greedy(llava, batch(LLAVA, llava, [row], seeds=[index]))
            assert torch.equal(batched[index, -3:], single[0, -3:])
            torch.testing.assert_close(batched_logits[index], single_logits[0], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_pool_cached_generation_equals_recomputation(llava):
    """Cached decoding after a pooled prefill equals a no-cache forward over prompt + generated tokens."""
    inputs = batch(LLAVA, llava, ROWS[:1])
    with fastvision.patched(llava, k=2, ratio=0.75, scoring="pool"):
        sequences, step_logits = _greedy(llava, inputs)
        kept = fastvision.kept_tokens(llava).kept_mask.clone()
        steps = step_logits.shape[1]
        # One row, no padding: the last prompt token scores nothing here (pool ranks by position), so the kept set
        # of the longer sequence is the prompt's.
        full = llava(input_ids=sequences[:, :-1], pixel_values=inputs["pixel_values"]).logits
        assert torch.equal(fastvision.kept_tokens(llava).kept_mask[:, : kept.shape[1]], kept)
    torch.testing.assert_close(full[:, -steps:], step_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llava_next", "qwen2_vl", "internvl"])
def test_pool_is_refused_where_images_have_no_fixed_grid(name):
    model = FAMILIES[name].make()
    before = dict(model.state_dict())
    with pytest.raises(ValueError, match="scoring='pool' averages each image's tokens"):
        fastvision.patch(model, k=2, ratio=0.5, scoring="pool")
    assert not fastvision.is_patched(model)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_pool_refuses_a_schedule():
    with pytest.raises(ValueError, match="merges tokens once, so it takes a single stage"):
        fastvision.FastVConfig(schedule=[(1, 0.5), (2, 0.5)], scoring="pool")
