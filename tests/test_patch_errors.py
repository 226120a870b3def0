"""Bad input gets a clear error and leaves the model exactly as it was."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

import fastvision
import fastvision.fastv.engine as engine_module
from fastvision.testing import llava_prompt, tiny_llava
from tests.test_fastv_llava import hook_snapshot

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model():
    return tiny_llava("llama")


@pytest.fixture(scope="module")
def inputs(model):
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8])])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))}


def _assert_untouched(model, inputs, hooks_before, baseline):
    assert not fastvision.is_patched(model)
    assert hook_snapshot(model) == hooks_before
    assert "generate" not in vars(model)
    attention = model.model.language_model.layers[1].self_attn
    assert attention.config is model.config.text_config
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, baseline)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"k": 0}, ValueError, "k=0 is out of range"),
        ({"k": 4}, ValueError, "allowed is 1 <= k < 4"),
        ({"k": 9}, ValueError, "k=9 is out of range"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"k": True}, TypeError, "k must be an int"),
        ({"ratio": 1.0}, ValueError, "0 <= ratio < 1"),
        ({"ratio": -0.1}, ValueError, "ratio=-0.1 is out of range"),
        ({"ratio": math.nan}, ValueError, "ratio=nan"),
        ({"ratio": "0.5"}, TypeError, "ratio must be a number"),
        ({"scoring": "max"}, ValueError, "allowed: last, mean, random"),
        ({"modality": "audio"}, ValueError, "allowed: all, image, video"),
        ({"schedule": [(2, 0.5), (2, 0.5)]}, ValueError, r"layers \[2, 2\] must be strictly increasing"),
        ({"schedule": [(3, 0.5), (1, 0.5)]}, ValueError, "strictly increasing"),
        ({"schedule": [(1, 0.5), (2, 1.0)]}, ValueError, r"schedule\[1\] ratio=1.0 .*leave no image token"),
        ({"schedule": [(1, 0.5), (4, 0.5)]}, ValueError, "schedule layer=4 is out of range"),
        ({"schedule": []}, ValueError, "non-empty list"),
        ({"schedule": [(1, 0.5)], "k": 1}, TypeError, "schedule=.* or k/ratio, not both"),
    ],
)
def test_bad_arguments_raise_and_leave_model_untouched(model, inputs, kwargs, error, message):
    with torch.no_grad():
        baseline = model(**inputs).logits
    hooks_before = hook_snapshot(model)
    with pytest.raises(error, match=message):
        fastvision.patch(model, **kwargs)
    _assert_untouched(model, inputs, hooks_before, baseline)


def test_unsupported_model_lists_supported_families():
    text_model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"model_type='llama'.*supported model types: .*llava"):
        fastvision.patch(text_model)
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.Module"):
        fastvision.patch("llava-hf/llava-1.5-7b-hf")


def test_unsupported_attention_implementation_is_refused(inputs):
    model = tiny_llava("llama")
    with torch.no_grad():
        baseline = model(**inputs).logits
    hooks_before = hook_snapshot(model)
    model.config.text_config._attn_implementation_internal = "flex_attention"
    with pytest.raises(ValueError, match=r"'flex_attention'.*attn_implementation='sdpa'"):
        fastvision.patch(model)
    model.config.text_config._attn_implementation_internal = "sdpa"
    _assert_untouched(model, inputs, hooks_before, baseline)


def test_unpatch_of_unpatched_model_raises(model):
    with pytest.raises(ValueError, match="not patched by fastvision"):
        fastvision.unpatch(model)
    with pytest.raises(ValueError, match="not patched by fastvision"):
        fastvision.kept_tokens(model)


def test_double_patch_raises_and_keeps_first_config(model, inputs):
    with fastvision.patched(model, k=2, ratio=0.5):
        with pytest.raises(RuntimeError, match=r"already patched.*unpatch"):
            fastvision.patch(model, k=1, ratio=0.25)
        assert fastvision.patch_config(model) == fastvision.FastVConfig(k=2, ratio=0.5)
    assert not fastvision.is_patched(model)


def test_config_object_and_keywords_are_exclusive(model):
    with pytest.raises(TypeError, match="not both"):
        fastvision.patch(model, fastvision.FastVConfig(), ratio=0.3)
    assert not fastvision.is_patched(model)


def test_failure_halfway_rolls_back(model, inputs, monkeypatch):
    with torch.no_grad():
        baseline = model(**inputs).logits
    hooks_before = hook_snapshot(model)

    def explode(*args):
        raise RuntimeError("injected failure")

    # The generate guard is installed last: every hook and routed attention before it must be rolled back.
    monkeypatch.setattr(engine_module, "guard_generate", explode)
    with pytest.raises(RuntimeError, match="injected failure"):
        fastvision.patch(model, k=2, ratio=0.5)
    _assert_untouched(model, inputs, hooks_before, baseline)


@torch.no_grad()
def test_unsupported_generation_modes_raise(model, inputs):
    with fastvision.patched(model, k=2, ratio=0.5):
        with pytest.raises(NotImplementedError, match=r"beam search.*num_beams=2"):
            model.generate(**inputs, num_beams=2, max_new_tokens=2)
        with pytest.raises(NotImplementedError, match="cache_implementation='static'"):
            model.generate(**inputs, cache_implementation="static", max_new_tokens=2)
        with pytest.raises(NotImplementedError, match="assisted"):
            model.generate(**inputs, prompt_lookup_num_tokens=2, max_new_tokens=2)
        static = StaticCache(config=model.config, max_cache_len=64)
        with pytest.raises(NotImplementedError, match="DynamicCache only, got StaticCache"):
            model(**inputs, past_key_values=static, use_cache=True)
        with pytest.raises(ValueError, match="labels cannot be passed"):
            model(**inputs, labels=inputs["input_ids"])
        # A failed forward leaves no state behind: the next one prunes normally.
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1] - 8


@torch.no_grad()
def test_image_tokens_on_a_filled_cache_raise(model, inputs):
    with fastvision.patched(model, k=2, ratio=0.5):
        cache = DynamicCache(config=model.config)
        model(**inputs, past_key_values=cache, use_cache=True)
        with pytest.raises(NotImplementedError, match="prefill only"):
            model(**inputs, past_key_values=cache, use_cache=True)


@torch.no_grad()
def test_sequence_beyond_sliding_window_is_refused(inputs):
    model = tiny_llava("mistral", sliding_window=8)
    with fastvision.patched(model, k=2, ratio=0.5):
        with pytest.raises(NotImplementedError, match="sliding_window=8"):
            model(**inputs)
