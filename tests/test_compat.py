"""The engine's transformers internals are resolved at patch time, and a changed one fails loudly, never silently."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import fastvision
from fastvision.fastv import compat
from fastvision.fastv.compat import TESTED_TRANSFORMERS, TransformersCompatibilityError, UntestedTransformersWarning
from fastvision.testing import llava_prompt, tiny_llava
from tests.test_fastv_llava import hook_snapshot

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model():
    return tiny_llava("llama")


def _inputs(model):
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8])])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))}


def _assert_untouched(model, hooks):
    assert not fastvision.is_patched(model)
    assert hook_snapshot(model) == hooks
    assert "generate" not in vars(model)
    for layer in model.model.language_model.layers:
        assert layer.self_attn.config is model.config.text_config


def test_renamed_decoder_layer_argument_makes_patch_raise(model, monkeypatch):
    """A release that renames what the layer hooks gather (simulated by wrapping one layer's forward) fails patch."""
    layer = model.model.language_model.layers[3]
    original = layer.forward

    def renamed(hidden_states, attention_mask=None, rotary_embeddings=None, cache=None, **kwargs):
        return original(hidden_states, attention_mask=attention_mask, position_embeddings=rotary_embeddings, **kwargs)

    monkeypatch.setattr(layer, "forward", renamed)
    hooks = hook_snapshot(model)
    with pytest.raises(TransformersCompatibilityError, match=r"has no argument\(s\) \['position_embeddings'\]") as info:
        fastvision.patch(model, k=2, ratio=0.5)
    assert f"transformers {compat.transformers_version()}" in str(info.value)
    assert f"tested with transformers {TESTED_TRANSFORMERS[0]} to {TESTED_TRANSFORMERS[1]}" in str(info.value)
    _assert_untouched(model, hooks)


def test_renamed_cache_argument_makes_patch_raise(model, monkeypatch):
    inner = model.model
    original = inner.forward

    def renamed(input_ids=None, pixel_values=None, attention_mask=None, kv_store=None, inputs_embeds=None, **kwargs):
        return original(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(inner, "forward", renamed)
    hooks = hook_snapshot(model)
    with pytest.raises(TransformersCompatibilityError, match=r"KV cache under none of the names \['cache', 'past_k"):
        fastvision.patch(model)
    _assert_untouched(model, hooks)


def test_changed_attention_call_convention_makes_patch_raise(model, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def reordered(query, key, value, module, attention_mask, **kwargs):
        raise AssertionError("never called")

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", reordered)
    hooks = hook_snapshot(model)
    with pytest.raises(TransformersCompatibilityError, match="attention-function call convention changed"):
        fastvision.patch(model)
    _assert_untouched(model, hooks)


def test_resolved_cache_name_follows_the_installed_release(model):
    with fastvision.patched(model):
        internals = model._fastvision_patch.engine.internals
    expected = "cache" if compat._minor(compat.transformers_version()) >= (5, 24) else "past_key_values"
    assert internals.cache_argument == expected
    assert internals.version == compat.transformers_version()


@torch.no_grad()
def test_decode_reads_the_cache_under_each_name_the_release_accepts(model):
    """The multimodal model itself (below the top-level rename) decodes the same under each accepted name, and with
    its input ids passed positionally, as the top-level model's decode step does."""
    inputs = _inputs(model)
    step = torch.tensor([[9]])
    mask = torch.ones(1, inputs["input_ids"].shape[1] + 1, dtype=torch.long)
    with fastvision.patched(model, k=2, ratio=0.5):
        internals = model._fastvision_patch.engine.internals

        def prefilled():
            cache = internals.output_cache(model(**inputs, use_cache=True))
            assert cache.get_seq_length(3) < cache.get_seq_length(0)  # the pruned layers hold fewer keys
            return cache

        reference = model(input_ids=step, attention_mask=mask, use_cache=True, past_key_values=prefilled()).logits
        calls = [((), {"input_ids": step, name: None}) for name in internals.cache_names]
        calls += [((step,), {name: None}) for name in internals.cache_names]  # ids positionally, the cache by keyword
        for args, kwargs in calls:
            kwargs = {name: (prefilled() if value is None else value) for name, value in kwargs.items()}
            hidden = model.model(*args, attention_mask=mask, use_cache=True, **kwargs).last_hidden_state
            assert torch.equal(model.lm_head(hidden), reference)
            assert fastvision.kept_tokens(model) is not None  # a decode step, not a fresh forward wiping the record


@torch.no_grad()
def test_a_cache_under_an_unknown_name_is_refused(model):
    from transformers import DynamicCache

    with fastvision.patched(model), pytest.raises(RuntimeError, match="could not classify this forward"):
        model(**_inputs(model), kv_store=DynamicCache())


@torch.no_grad()
def test_a_pruned_cache_without_its_record_is_refused(model):
    """The failure mode of the 5.24 rename: a pruned cache decoded as if nothing were pruned now raises."""
    inputs = _inputs(model)
    with fastvision.patched(model, k=2, ratio=0.5):
        engine = model._fastvision_patch.engine
        cache = engine.internals.output_cache(model(**inputs, use_cache=True))
        engine._decode_states.clear()
        mask = torch.ones(1, inputs["input_ids"].shape[1] + 1, dtype=torch.long)
        with pytest.raises(RuntimeError, match="KV cache of decoder layer 2 holds"):
            model(input_ids=torch.tensor([[9]]), attention_mask=mask, past_key_values=cache, use_cache=True)


def test_untested_version_warns_once_at_patch_time(model, monkeypatch):
    monkeypatch.setattr(compat, "transformers_version", lambda: "5.99.0")
    with pytest.warns(UntestedTransformersWarning, match=r"tested with transformers 5\.\d+ to 5\.\d+, but 5\.99\.0"):
        fastvision.patch(model)
    fastvision.unpatch(model)


def test_tested_version_does_not_warn(model):
    assert compat.is_tested_version(compat.transformers_version())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntestedTransformersWarning)
        with fastvision.patched(model):
            pass


@pytest.mark.parametrize(
    ("version", "tested"),
    [(f"{TESTED_TRANSFORMERS[0]}.0", True), (f"{TESTED_TRANSFORMERS[1]}.3", True), ("5.11.0", False),
     ("6.0.0", False), ("5.24.0.dev0", True), ("4.57.1", False)],
)  # fmt: skip
def test_tested_range_is_by_minor(version, tested):
    assert compat.is_tested_version(version) is tested


def test_pyproject_and_ci_state_the_tested_range():
    """The range in the code is the one pyproject declares and the one .ci/run installs."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["tool"]["fastvision"]["tested-transformers"]
    assert tuple(declared) == TESTED_TRANSFORMERS
    ci = (ROOT / ".ci" / "run").read_text()
    for minor in TESTED_TRANSFORMERS:
        assert re.search(rf"transformers==?{re.escape(minor)}\.", ci) or f"transformers~={minor}" in ci, minor
    requirement = next(d for d in project["project"]["dependencies"] if d.startswith("transformers"))
    assert f">={TESTED_TRANSFORMERS[0]}" in requirement
