"""FastV on LLaVA (LLaMA, Qwen2 and Mistral text models): exactness, reference agreement, cache and batching."""

from __future__ import annotations

import pytest
import torch

import fastvision
from fastvision.testing import left_pad, llava_prompt, positions_from_mask, tiny_llava
from tests.reference import reference_fastv

pytestmark = pytest.mark.engine

BACKBONES = ("llama", "qwen2", "mistral")


@pytest.fixture(scope="module", params=BACKBONES)
def model(request):
    return tiny_llava(request.param)


def _pixels(count: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _single(model, prefix=(5, 6), suffix=(7, 8, 9)):
    ids = torch.tensor([llava_prompt(model, list(prefix), list(suffix))])
    return ids, _pixels(1)


def hook_snapshot(model) -> dict[str, tuple]:
    """Every module's hook ids (transformers installs output-capturing hooks of its own on first use)."""
    return {
        name: (tuple(module._forward_pre_hooks), tuple(module._forward_hooks)) for name, module in model.named_modules()
    }


def _greedy(model, **inputs):
    out = model.generate(
        **inputs, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0
    )
    return out.sequences, torch.stack(out.logits, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_ratio_zero_is_bit_identical(attention):
    model = tiny_llava("llama", attn_implementation=attention)
    ids, pixels = _single(model)
    baseline = model(input_ids=ids, pixel_values=pixels).logits
    base_tokens, _ = _greedy(model, input_ids=ids, pixel_values=pixels)
    with fastvision.patched(model, k=2, ratio=0.0):
        assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits, baseline)
        tokens, _ = _greedy(model, input_ids=ids, pixel_values=pixels)
        assert torch.equal(tokens, base_tokens)
        assert fastvision.kept_tokens(model).num_kept_image_tokens == [16]


@torch.no_grad()
def test_ratio_zero_bit_identical_per_backbone(model):
    ids, pixels = _single(model)
    baseline = model(input_ids=ids, pixel_values=pixels).logits
    with fastvision.patched(model, k=1, ratio=0.0):
        assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits, baseline)


@torch.no_grad()
def test_unpatch_restores_bit_identical_outputs(model):
    ids, pixels = _single(model)
    baseline = model(input_ids=ids, pixel_values=pixels).logits
    base_tokens, base_logits = _greedy(model, input_ids=ids, pixel_values=pixels)
    hooks_before = hook_snapshot(model)
    fastvision.patch(model, k=2, ratio=0.75)
    assert hook_snapshot(model) != hooks_before
    pruned = model(input_ids=ids, pixel_values=pixels).logits
    assert pruned.shape[1] == ids.shape[1] - 12
    fastvision.unpatch(model)
    assert not fastvision.is_patched(model)
    assert "generate" not in vars(model)
    assert hook_snapshot(model) == hooks_before
    assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits, baseline)
    tokens, logits = _greedy(model, input_ids=ids, pixel_values=pixels)
    assert torch.equal(tokens, base_tokens) and torch.equal(logits, base_logits)


@torch.no_grad()
@pytest.mark.parametrize("scoring", ["last", "mean"])
@pytest.mark.parametrize(("k", "ratio"), [(1, 0.5), (2, 0.25), (3, 0.75)])
def test_single_sample_matches_reference(model, scoring, k, ratio):
    ids, pixels = _single(model)
    kept_ref, logits_ref = reference_fastv(model, ids, pixels, k=k, ratio=ratio, scoring=scoring)
    with fastvision.patched(model, k=k, ratio=ratio, scoring=scoring):
        logits = model(input_ids=ids, pixel_values=pixels).logits
        record = fastvision.kept_tokens(model)
    assert record.kept_image_positions(0).tolist() == kept_ref[0]
    assert record.num_kept_image_tokens == [16 - int(16 * ratio)]
    torch.testing.assert_close(logits[0], logits_ref[0], atol=1e-4, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("scoring", ["last", "mean"])
def test_left_padded_batch_matches_reference_per_row(model, scoring):
    rows = [
        llava_prompt(model, [5], [7, 8, 9, 10, 11]),
        llava_prompt(model, [5, 6, 12], [7]),
        [5, 6, 7, 8],  # no image: runs unpruned, and the batch needs slots
    ]
    ids, mask = left_pad(rows)
    pixels = _pixels(2)
    positions = positions_from_mask(mask)
    kept_ref, logits_ref = reference_fastv(
        model, ids, pixels, k=2, ratio=0.5, scoring=scoring, attention_mask=mask, position_ids=positions
    )
    with fastvision.patched(model, k=2, ratio=0.5, scoring=scoring):
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=positions).logits
        record = fastvision.kept_tokens(model)
    assert record.num_image_tokens == [16, 16, 0]
    assert record.num_kept_image_tokens == [8, 8, 0]
    for row in range(3):
        assert record.kept_image_positions(row).tolist() == kept_ref[row]
        # The row's real (non-padding) tokens are the last ones of its kept sequence.
        real = logits[row, -logits_ref[row].shape[0] :]
        torch.testing.assert_close(real, logits_ref[row], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_cached_generation_equals_recomputation(model):
    rows = [llava_prompt(model, [5], [7, 8, 9, 10]), llava_prompt(model, [5, 6, 12], [7])]
    ids, mask = left_pad(rows)
    pixels = _pixels(2)
    with fastvision.patched(model, k=2, ratio=0.5):
        sequences, step_logits = _greedy(model, input_ids=ids, pixel_values=pixels, attention_mask=mask)
        kept_prefill = [fastvision.kept_tokens(model).kept_image_positions(r).tolist() for r in range(2)]
    steps = step_logits.shape[1]
    full = sequences[:, :-1]
    full_mask = torch.cat([mask, torch.ones(2, steps - 1, dtype=mask.dtype)], dim=1)
    kept_ref, logits_ref = reference_fastv(
        model,
        full,
        pixels,
        k=2,
        ratio=0.5,
        attention_mask=full_mask,
        position_ids=positions_from_mask(full_mask),
        prompt_length=ids.shape[1],
    )
    assert kept_ref == kept_prefill
    for row in range(2):
        torch.testing.assert_close(step_logits[row], logits_ref[row][-steps:], atol=1e-4, rtol=1e-4)
        assert torch.equal(step_logits[row].argmax(-1), sequences[row, ids.shape[1] :])


@torch.no_grad()
def test_batched_generation_rows_equal_single_runs(model):
    rows = [llava_prompt(model, [5], [7, 8, 9, 10]), [5, 6, 7], llava_prompt(model, [5, 6, 12], [7])]
    pixels = _pixels(2)
    ids, mask = left_pad(rows)
    with fastvision.patched(model, k=2, ratio=0.5):
        batched, batched_logits = _greedy(model, input_ids=ids, pixel_values=pixels, attention_mask=mask)
        image_index = 0
        for row, prompt in enumerate(rows):
            has_image = fastvision.testing.IMAGE_TOKEN_ID in prompt
            inputs = {"input_ids": torch.tensor([prompt])}
            if has_image:
                inputs["pixel_values"] = pixels[image_index : image_index + 1]
                image_index += 1
            single, single_logits = _greedy(model, **inputs)
            assert torch.equal(batched[row, -4:], single[0, -4:])
            torch.testing.assert_close(batched_logits[row], single_logits[0], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_prompt_without_image_runs_unpruned(model):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    baseline = model(input_ids=ids).logits
    base_tokens, _ = _greedy(model, input_ids=ids)
    with fastvision.patched(model, k=2, ratio=0.9):
        assert torch.equal(model(input_ids=ids).logits, baseline)
        assert fastvision.kept_tokens(model) is None
        tokens, _ = _greedy(model, input_ids=ids)
        assert torch.equal(tokens, base_tokens)


@torch.no_grad()
def test_forward_with_cache_then_manual_decode(model):
    """A pruned prefill's returned cache, fed back by hand, decodes like generate does."""
    ids, pixels = _single(model)
    with fastvision.patched(model, k=2, ratio=0.5):
        _, step_logits = _greedy(model, input_ids=ids, pixel_values=pixels)
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True)
        lengths = [layer.keys.shape[2] for layer in out.past_key_values.layers]
        assert lengths == [ids.shape[1]] * 2 + [ids.shape[1] - 8] * 2  # no duplicated KV at layer k-1
        next_token = out.logits[:, -1:].argmax(-1)
        second = model(input_ids=next_token, past_key_values=out.past_key_values, use_cache=True)
    torch.testing.assert_close(out.logits[0, -1], step_logits[0, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second.logits[0, -1], step_logits[0, 1], atol=1e-5, rtol=1e-5)


def test_patched_and_unpatched_instances_coexist():
    first, second = tiny_llava("llama"), tiny_llava("llama")
    ids, pixels = _single(first)
    with torch.no_grad():
        baseline = second(input_ids=ids, pixel_values=pixels).logits
        with fastvision.patched(first, k=2, ratio=0.5):
            assert first(input_ids=ids, pixel_values=pixels).logits.shape[1] == ids.shape[1] - 8
            assert torch.equal(second(input_ids=ids, pixel_values=pixels).logits, baseline)


@torch.no_grad()
@pytest.mark.parametrize("scoring", ["last", "mean"])
def test_eager_attention_padded_batch_and_cache_match_reference(scoring):
    """Eager models pass additive float masks: the same exactness holds."""
    model = tiny_llava("qwen2", attn_implementation="eager")
    rows = [llava_prompt(model, [5], [7, 8, 9, 10]), [5, 6, 7], llava_prompt(model, [5, 6, 12], [7])]
    ids, mask = left_pad(rows)
    pixels = _pixels(2)
    with fastvision.patched(model, k=2, ratio=0.5, scoring=scoring):
        sequences, step_logits = _greedy(model, input_ids=ids, pixel_values=pixels, attention_mask=mask)
        kept_prefill = [fastvision.kept_tokens(model).kept_image_positions(r).tolist() for r in range(3)]
    steps = step_logits.shape[1]
    full_mask = torch.cat([mask, torch.ones(3, steps - 1, dtype=mask.dtype)], dim=1)
    kept_ref, logits_ref = reference_fastv(
        model,
        sequences[:, :-1],
        pixels,
        k=2,
        ratio=0.5,
        scoring=scoring,
        attention_mask=full_mask,
        position_ids=positions_from_mask(full_mask),
        prompt_length=ids.shape[1],
    )
    assert kept_ref == kept_prefill
    for row in range(3):
        torch.testing.assert_close(step_logits[row], logits_ref[row][-steps:], atol=1e-4, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("scoring", ["last", "mean"])
def test_schedule_matches_reference(model, scoring):
    """PyramidDrop-style stages: each stage re-ranks the tokens the previous one kept."""
    schedule = [(1, 0.5), (3, 0.5)]
    rows = [llava_prompt(model, [5], [7, 8, 9, 10]), [5, 6, 7], llava_prompt(model, [5, 6, 12], [7])]
    ids, mask = left_pad(rows)
    pixels = _pixels(2)
    positions = positions_from_mask(mask)
    with fastvision.patched(model, schedule=schedule, scoring=scoring):
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, position_ids=positions).logits
        record = fastvision.kept_tokens(model)
        sequences, step_logits = _greedy(model, input_ids=ids, pixel_values=pixels, attention_mask=mask)
    kept_ref, logits_ref = reference_fastv(
        model, ids, pixels, schedule=schedule, scoring=scoring, attention_mask=mask, position_ids=positions
    )
    assert record.num_kept_image_tokens == [4, 0, 4]
    for row in range(3):
        assert record.kept_image_positions(row).tolist() == kept_ref[row]
        torch.testing.assert_close(logits[row, -logits_ref[row].shape[0] :], logits_ref[row], atol=1e-4, rtol=1e-4)
    steps = step_logits.shape[1]
    full_mask = torch.cat([mask, torch.ones(3, steps - 1, dtype=mask.dtype)], dim=1)
    _, recomputed = reference_fastv(
        model, sequences[:, :-1], pixels, schedule=schedule, scoring=scoring, attention_mask=full_mask,
        position_ids=positions_from_mask(full_mask), prompt_length=ids.shape[1],
    )  # fmt: skip
    for row in range(3):
        torch.testing.assert_close(step_logits[row], recomputed[row][-steps:], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_prompt_ending_with_image_keeps_its_last_token(model):
    ids = torch.tensor([llava_prompt(model, [5, 6], [])])
    pixels = _pixels(1)
    with fastvision.patched(model, k=2, ratio=0.5):
        logits = model(input_ids=ids, pixel_values=pixels).logits
        record = fastvision.kept_tokens(model)
    last = ids.shape[1] - 1
    assert record.num_image_tokens == [16]
    assert int(record.prunable_mask.sum()) == 15  # the last placeholder is protected, not ranked
    assert bool(record.kept_mask[0, last])
    assert logits.shape[1] == ids.shape[1] - 7  # floor(0.5 * 15) dropped; the last row is the last token's
