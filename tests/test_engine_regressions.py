"""Regressions a review of the engine found; each test failed before its fix."""

from __future__ import annotations

import threading

import pytest
import torch

import fastvision
from fastvision.fastv.config import FastVConfig
from fastvision.testing import llava_prompt, tiny_llava
from tests.families import FAMILIES, IMAGE, VIDEO, batch

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model():
    return tiny_llava("llama")


def _inputs(model, seed: int = 3):
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8])])
    return {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))}


@torch.no_grad()
def test_a_raising_pre_hook_leaves_the_context_stack_balanced(model):
    """The always-called end hook pops what its own forward pushed, not an enclosing context."""
    inputs = _inputs(model)
    with fastvision.patched(model, k=2, ratio=0.5):
        engine = model._fastvision_patch.engine
        cache = engine.internals.output_cache(model(**inputs, use_cache=True))
        with engine.prefill(torch.zeros(1, 4, dtype=torch.bool)):
            assert len(engine._stack()) == 1
            with pytest.raises(NotImplementedError, match="prefill only"):
                model(**inputs, past_key_values=cache, use_cache=True)  # images on a filled cache: the pre-hook raises
            assert len(engine._stack()) == 1
        assert engine._stack() == []


@torch.no_grad()
def test_another_raising_pre_hook_leaves_the_stack_balanced(model):
    """The engine's pre-hook runs first, so a user's pre-hook that raises after it pops only this forward's entry."""
    inputs = _inputs(model)

    def refuse(module, args, kwargs):
        raise KeyError("a user's hook")

    user = model.model.register_forward_pre_hook(refuse, with_kwargs=True)
    try:
        with fastvision.patched(model, k=2, ratio=0.5):
            engine = model._fastvision_patch.engine
            with engine.prefill(torch.zeros(1, 4, dtype=torch.bool)):
                with pytest.raises(KeyError, match="a user's hook"):
                    model(**inputs)
                assert len(engine._stack()) == 1
    finally:
        user.remove()


@torch.no_grad()
def test_random_scoring_is_reproducible_per_request(model):
    """Each forward seeds its own noise, so one request keeps the same tokens whatever ran before or beside it."""
    inputs = _inputs(model)
    with fastvision.patched(model, k=2, ratio=0.5, scoring="random", seed=7):
        model(**inputs)
        first = fastvision.kept_tokens(model).kept_mask.clone()
        model(**inputs)
        assert torch.equal(fastvision.kept_tokens(model).kept_mask, first)
        masks = []

        def worker():
            model(**inputs)
            masks.append(fastvision.kept_tokens(model).kept_mask.clone())

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(masks) == 3 and all(torch.equal(mask, first) for mask in masks)
    with fastvision.patched(model, k=2, ratio=0.5, scoring="random", seed=8):
        model(**inputs)
        assert not torch.equal(fastvision.kept_tokens(model).kept_mask, first)  # the seed still matters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 5, "schedule": [(2, 0.5)]}, r"k=5 conflicts with schedule=.*first stage is \(k=2, ratio=0.5\)"),
        ({"ratio": 0.25, "schedule": [(2, 0.5)]}, "ratio=0.25 conflicts"),
        ({"k": 3, "ratio": 0.1, "schedule": [(2, 0.5), (3, 0.5)]}, "k=3, ratio=0.1 conflicts"),
    ],
)
def test_config_refuses_k_or_ratio_that_conflict_with_the_schedule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FastVConfig(**kwargs)


def test_config_accepts_k_and_ratio_equal_to_the_first_stage():
    config = FastVConfig(k=2, ratio=0.5, schedule=[(2, 0.5), (3, 0.25)])
    assert config.stages == ((2, 0.5), (3, 0.25))
    assert FastVConfig.from_dict(config.to_dict()) == config
    assert FastVConfig() == FastVConfig(k=2, ratio=0.5)


@torch.no_grad()
def test_sliding_window_is_checked_before_generating():
    """A generate call whose forwards would outgrow the window raises before its first forward.

    The longest forward of ``max_new_tokens`` new tokens is ``prompt + max_new_tokens - 1`` long (the last token is
    never fed back), so a window of ``prompt + 2`` allows 3 new tokens and refuses 4, which used to fail at the third
    forward after two tokens had been produced.
    """
    family = FAMILIES["gemma3"]
    model = family.make()
    inputs = batch(family, model, [([5, 6], ["image"], [7, 8, 9])])
    prompt = inputs["input_ids"].shape[1]
    model.config.text_config.sliding_window = prompt + 2
    forwards = []
    counter = model.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        with fastvision.patched(model, k=2, ratio=0.5):
            message = rf"length {prompt + 3} \(prompt {prompt} \+ max_new_tokens 4 - 1\).*sliding_window"
            with pytest.raises(NotImplementedError, match=message):
                model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0)
            assert forwards == []
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
            assert out.shape[1] == prompt + 3 and len(forwards) == 3
            with pytest.raises(NotImplementedError, match="chunked prefill"):
                model.generate(**inputs, max_new_tokens=2, prefill_chunk_size=4)
    finally:
        counter.remove()


@torch.no_grad()
def test_record_holds_each_stage_and_tells_images_from_videos():
    family = FAMILIES["qwen2_vl"]
    model = family.make()
    inputs = batch(family, model, [([5], ["image", "video"], [7, 8])])
    ids = inputs["input_ids"][0]
    config = FastVConfig(schedule=[(1, 0.5), (3, 0.5)])
    with fastvision.patched(model, config):
        model(**inputs)
        record = fastvision.kept_tokens(model)
    images, videos = int((ids == IMAGE).sum()), int((ids == VIDEO).sum())
    assert record.num_image_tokens == [images] and record.counts("video") == [videos]
    assert record.num_visual_tokens == [images + videos]
    assert torch.equal(record.image_positions(0), torch.nonzero(ids == IMAGE).flatten())
    first, second = record.stages
    assert (first.layer, second.layer) == (1, 3)
    assert bool((first.kept_mask | ~second.kept_mask).all())  # stage 2 keeps a subset of stage 1
    ranked = record.prunable_mask[0]
    kept_counts = config.kept_counts(int(ranked.sum()))
    assert int((first.kept_mask[0] & ranked).sum()) == kept_counts[0]
    assert int((second.kept_mask[0] & ranked).sum()) == kept_counts[1]
    assert torch.equal(record.kept_mask, second.kept_mask)
    assert bool(torch.isfinite(first.scores[0]).all())  # the first scoring layer sees every token
    unseen = torch.isnan(second.scores[0])
    assert torch.equal(unseen, ~first.kept_mask[0])  # the second scores exactly what the first kept
    assert int(torch.isnan(record.image_scores(0, stage=1)).sum()) == int((~first.kept_mask[0] & (ids == IMAGE)).sum())
    assert bool(torch.isfinite(record.image_scores(0)).all())
    with pytest.raises(ValueError, match="allowed: image, video, visual"):
        record.mask("audio")


def test_sweep_refuses_a_missing_kept_token_record(model, monkeypatch):
    """A patched setting whose prefill left no record is an error, never the full image-token count."""
    from fastvision.evals import sweep

    setting = sweep.Setting("fastv K=2 R=0.5", "fastv", FastVConfig())
    monkeypatch.setattr(fastvision, "kept_tokens", lambda model: None)
    with pytest.raises(RuntimeError, match="left no kept-token record for a batch with 16 image tokens"):
        sweep._kept_image_tokens(model, setting, 16)
    assert sweep._kept_image_tokens(model, setting, 0) == 0
    assert sweep._kept_image_tokens(model, sweep.Setting("unpatched", "unpatched", None), 16) == 16


@torch.no_grad()
def test_stride_baseline_keeps_evenly_spaced_image_tokens(model):
    """scoring="stride" keeps every other image token at ratio 0.5, whatever the image shows."""
    with fastvision.patched(model, k=2, ratio=0.5, scoring="stride"):
        kept = []
        for seed in (3, 4):
            model(**_inputs(model, seed))
            kept.append(fastvision.kept_tokens(model).kept_image_positions(0).tolist())
    images = _inputs(model)["input_ids"][0] == model.config.image_token_id
    positions = torch.nonzero(images).flatten().tolist()
    assert kept[0] == kept[1] == positions[1::2]
