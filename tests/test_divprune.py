"""DivPrune (arXiv 2503.02175) before the language model: the greedy max-min selection against a reference, the
config, the dispatch and layer 0's cache.

The family matrix (tests/test_families.py) runs DivPrune through the same exactness checks as FastV on every family
it applies to (Qwen3-VL is refused: its deepstack features enter the first layers).
"""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch

import fastvision
from fastvision.divprune.selection import divprune_scores, max_min_diverse
from fastvision.testing import tiny_llava_with_one_image
from tests.test_fastv_llava import hook_snapshot


def reference_max_min(features: torch.Tensor, keep: int) -> list[int]:
    """The greedy Max-Min Diversity rule, written with Python loops over cosine distances."""
    count = len(features)

    def distance(a: int, b: int) -> float:
        return 1.0 - float(torch.nn.functional.cosine_similarity(features[a], features[b], dim=0))

    nearest = [min(distance(i, j) for j in range(count) if j != i) for i in range(count)]
    picked = [max(range(count), key=lambda i: (nearest[i], -i))]
    while len(picked) < keep:
        rest = [i for i in range(count) if i not in picked]
        picked.append(max(rest, key=lambda i: (min(distance(i, p) for p in picked), -i)))
    return picked


@pytest.mark.parametrize(("count", "keep"), [(12, 1), (12, 5), (16, 16), (9, 4)])
def test_selection_matches_the_reference(count, keep):
    torch.manual_seed(count * 31 + keep)
    features = torch.randn(count, 8)
    assert max_min_diverse(features, keep).tolist() == reference_max_min(features, keep)


def test_duplicates_are_dropped_first():
    """Two copies of one token: the greedy rule never keeps both while a distinct token is left."""
    base = torch.eye(4)
    features = torch.cat([base, base[:1]])  # token 4 duplicates token 0
    picked = set(max_min_diverse(features, 4).tolist())
    assert picked in ({0, 1, 2, 3}, {1, 2, 3, 4})


def test_scores_keep_exactly_each_rows_budget():
    torch.manual_seed(0)
    hidden = torch.randn(2, 10, 6)
    prunable = torch.zeros(2, 10, dtype=torch.bool)
    prunable[0, 2:8] = True
    prunable[1, 1:9] = True
    scores = divprune_scores(hidden, prunable, [3, 5])
    assert [int((scores[row] > 0).sum()) for row in range(2)] == [3, 3]
    assert not bool((scores > 0)[~prunable].any())


@pytest.fixture(scope="module")
def llava():
    return tiny_llava_with_one_image()


@torch.no_grad()
def test_every_layer_sees_the_kept_tokens_and_layer_zero_caches_the_whole_prompt(llava):
    model, inputs = llava
    prompt = inputs["input_ids"].shape[1]
    seen = []
    with fastvision.patched(model, method="divprune", ratio=0.75):  # observers after the engine's pre-hooks
        hooks = [layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
                 for layer in model.model.language_model.layers]  # fmt: skip
        output = model(**inputs, use_cache=True)
        record = fastvision.kept_tokens(model)
        for hook in hooks:
            hook.remove()
    kept = prompt - 16 + 4
    assert record.num_kept_visual_tokens == [4] and record.stages[0].layer == 0
    assert seen == [kept] * len(model.model.language_model.layers)
    cache = output.past_key_values
    assert cache.get_seq_length(0) == prompt and cache.get_seq_length(1) == kept
    dropped = ~record.kept_mask[0]
    assert bool((cache.layers[0].keys[0, :, dropped] == 0).all())  # zeros at the dropped positions, masked later


def test_the_config_round_trips_and_names_bad_values(llava):
    config = fastvision.DivPruneConfig(ratio=0.8, modality="image")
    assert fastvision.DivPruneConfig.from_dict(config.to_dict()) == config and config.to_dict()["k"] == 0
    for bad, message in [({"ratio": 1.0}, "DivPrune ratio=1.0 is out of range"),
                         ({"modality": "audio"}, "DivPrune modality='audio' is unknown")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            fastvision.DivPruneConfig(**bad)
    model, _ = llava
    hooks = hook_snapshot(model)
    with pytest.raises(TypeError, match=r"\['k'\] do not apply to DivPrune"):
        fastvision.patch(model, method="divprune", k=2, ratio=0.5)
    assert not fastvision.is_patched(model) and hook_snapshot(model) == hooks


@torch.no_grad()
def test_every_method_keeps_the_same_count(llava):
    model, inputs = llava
    configs = [fastvision.FastVConfig(k=2, ratio=0.75), fastvision.DARTConfig(k=2, ratio=0.75),
               fastvision.DivPruneConfig(ratio=0.75)]  # fmt: skip
    counts = []
    for config in configs:
        with fastvision.patched(model, config):
            model(**inputs)
            counts.append(fastvision.kept_tokens(model).num_kept_visual_tokens)
    assert all(a == b for a, b in itertools.pairwise(counts)) and counts[0] == [4]


@torch.no_grad()
def test_a_layer_zero_failure_leaves_the_cache_unwrapped(llava):
    from transformers import DynamicCache

    model, inputs = llava
    cache = DynamicCache()

    def fail(module, args):
        raise RuntimeError("layer 0 failed")

    with fastvision.patched(model, method="divprune", ratio=0.5):
        hook = model.model.language_model.layers[0].mlp.register_forward_pre_hook(fail)
        try:
            with pytest.raises(RuntimeError, match="layer 0 failed"):
                name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
                model(**inputs, **{name: cache}, use_cache=True)
        finally:
            hook.remove()
    assert "update" not in vars(cache)  # the layer-0 wrapper is gone even though layer 0 raised
