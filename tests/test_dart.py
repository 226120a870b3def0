"""DART (arXiv 2502.11494) on the FastV engine: the config, the dispatch, and the kept set against a reference.

The family matrix (tests/test_families.py) runs DART through the same exactness checks as FastV: ratio 0 and
unpatch bit-exact, padded rows equal single runs, cached generation equals recomputation, measured FLOPs equal
analytic ones.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastvision
from fastvision.dart.selection import dart_scores, pivot_budgets
from fastvision.testing import tiny_llava_with_one_image
from tests.test_fastv_llava import hook_snapshot


def reference_dart_keep(features, norms, image, text, keep, image_pivots=4, text_pivots=4):
    """One row, written independently with Python lists: the set of positions DART keeps."""
    image_by_norm = sorted(image, key=lambda p: (-norms[p], image.index(p)))
    text_by_norm = sorted(text, key=lambda p: (-norms[p], text.index(p)))
    pivots_image = image_by_norm[: min(image_pivots, keep)]
    pivots = pivots_image + text_by_norm[:text_pivots]
    pool = [p for p in image if p not in pivots_image]
    kept = set(pivots_image)
    remaining = keep - len(pivots_image)

    def cosine(a, b):
        return float(torch.nn.functional.cosine_similarity(features[a], features[b], dim=0))

    for index, pivot in enumerate(pivots):
        budget = (index + 1) * remaining // len(pivots) - index * remaining // len(pivots)
        ranked = sorted(pool, key=lambda p: (cosine(p, pivot), pool.index(p)))
        picked = ranked[:budget]
        kept.update(picked)
        pool = [p for p in pool if p not in picked]
    return kept


@pytest.mark.parametrize(("keep", "text_count"), [(9, 4), (5, 2), (2, 0), (16, 3)])
def test_kept_set_matches_the_reference(keep, text_count):
    torch.manual_seed(keep)
    length, hidden = 24, 16
    states = torch.randn(1, length, hidden)
    norms = torch.rand(1, length)
    prunable = torch.zeros(1, length, dtype=torch.bool)
    prunable[0, 3:19] = True
    text = torch.zeros(1, length, dtype=torch.bool)
    text[0, 19 : 19 + text_count] = True
    scores = dart_scores(states, norms, prunable, text, [16 - keep], nn.Identity(), 4, 4)
    kept = set(scores[0].nonzero().flatten().tolist())
    image = list(range(3, 19))
    assert kept == reference_dart_keep(states[0], norms[0].tolist(), image, list(range(19, 19 + text_count)), keep)
    assert len(kept) == keep and kept <= set(image)


def test_pivot_budgets_share_the_remainder_exactly():
    for remaining in range(0, 40):
        for pivots in range(1, 9):
            budgets = pivot_budgets(remaining, pivots)
            assert sum(budgets) == remaining and max(budgets) - min(budgets) <= 1


@pytest.fixture(scope="module")
def llava():
    return tiny_llava_with_one_image()


@torch.no_grad()
def test_the_config_type_and_method_keyword_both_select_dart(llava):
    model, inputs = llava
    with fastvision.patched(model, fastvision.DARTConfig(k=2, ratio=0.75)):
        by_config = fastvision.kept_tokens(model) if model(**inputs) is not None else None
    with fastvision.patched(model, method="dart", k=2, ratio=0.75, image_pivots=4):
        assert fastvision.patch_config(model) == fastvision.DARTConfig(k=2, ratio=0.75)
        model(**inputs)
        assert torch.equal(fastvision.kept_tokens(model).kept_mask, by_config.kept_mask)
    assert by_config.num_kept_visual_tokens == [4] and by_config.config.scoring == "dart"
    # The pivots are the image tokens with the largest key norms; they are always kept.
    with fastvision.patched(model, method="dart", k=2, ratio=0.75, image_pivots=4, text_pivots=0):
        model(**inputs)
        assert fastvision.kept_tokens(model).num_kept_visual_tokens == [4]


def test_the_config_round_trips_and_names_bad_values():
    config = fastvision.DARTConfig(k=3, ratio=0.5, image_pivots=2, text_pivots=0, modality="image")
    assert fastvision.DARTConfig.from_dict(config.to_dict()) == config
    for bad, message in [
        ({"k": 0}, "DART k=0 is out of range"),
        ({"ratio": 1.0}, "DART ratio=1.0 is out of range"),
        ({"image_pivots": 0}, "DART image_pivots=0 is out of range: allowed is image_pivots >= 1"),
        ({"text_pivots": -1}, "DART text_pivots=-1 is out of range"),
        ({"modality": "audio"}, "DART modality='audio' is unknown"),
    ]:
        with pytest.raises(ValueError, match=message):
            fastvision.DARTConfig(**bad)
    with pytest.raises(ValueError, match="Not a DART config"):
        fastvision.DARTConfig.from_dict(fastvision.FastVConfig().to_dict())


def test_bad_patches_leave_the_model_untouched(llava):
    model, _ = llava
    hooks = hook_snapshot(model)
    with pytest.raises(ValueError, match="DART k=4 is out of range for a text model with 4 decoder layers"):
        fastvision.patch(model, method="dart", k=4)
    with pytest.raises(ValueError, match="method='visionzap' is unknown; allowed: 'fastv', 'dart'"):
        fastvision.patch(model, method="visionzap", k=2)
    with pytest.raises(TypeError, match=r"Unknown options \['scoring'\] do not apply to DART|scoring"):
        fastvision.patch(model, method="dart", scoring="mean")
    assert not fastvision.is_patched(model) and hook_snapshot(model) == hooks
