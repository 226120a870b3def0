"""FastV on Qwen2-VL agrees with an independent per-sample reference that builds M-RoPE positions by hand."""

from __future__ import annotations

import pytest
import torch

import fastvision
from tests.families import FAMILIES, IMAGE, VIDEO, batch
from tests.reference_qwen import mrope_positions, reference_fastv_qwen

pytestmark = pytest.mark.engine

ROWS = [([5, 6], ["image"], [7, 8, 9]), ([5], [], [7, 8]), ([5, 12], ["image", "image"], [7])]


@pytest.fixture(scope="module")
def qwen():
    family = FAMILIES["qwen2_vl"]
    return family, family.make()


def test_mrope_rule_on_a_small_layout():
    ids = [1, 2, 9, 9, 9, 9, 9, 9, 3]  # two text tokens, a 2 x 3 image grid, one text token
    assert mrope_positions(ids, 9, [(2, 3)]).tolist() == [
        [0, 1, 2, 2, 2, 2, 2, 2, 5],
        [0, 1, 2, 2, 2, 3, 3, 3, 5],
        [0, 1, 2, 3, 4, 2, 3, 4, 5],
    ]


@torch.no_grad()
@pytest.mark.parametrize("scoring", ["last", "mean"])
@pytest.mark.parametrize(("k", "ratio"), [(2, 0.5), (1, 0.75)])
def test_padded_batch_matches_reference_per_row(qwen, scoring, k, ratio):
    family, model = qwen
    inputs = batch(family, model, ROWS)
    kept_ref, logits_ref = reference_fastv_qwen(model, inputs, IMAGE, k=k, ratio=ratio, scoring=scoring)
    with fastvision.patched(model, k=k, ratio=ratio, scoring=scoring):
        logits = model(**inputs).logits
        record = fastvision.kept_tokens(model)
    assert record.num_image_tokens == [16, 0, 32]
    for row in range(len(ROWS)):
        assert record.kept_image_positions(row).tolist() == kept_ref[row]
        real = logits[row, -logits_ref[row].shape[0] :]  # the row's real tokens end its kept sequence
        torch.testing.assert_close(real, logits_ref[row], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_cached_generation_matches_reference(qwen):
    family, model = qwen
    inputs = batch(family, model, ROWS)
    prompt, steps = inputs["input_ids"].shape[1], 3
    with fastvision.patched(model, k=2, ratio=0.5):
        out = model.generate(
            **inputs, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
            pad_token_id=0, suppress_tokens=[IMAGE, VIDEO],
        )  # fmt: skip
        kept = [fastvision.kept_tokens(model).kept_image_positions(row).tolist() for row in range(len(ROWS))]
    step_logits = torch.stack(out.logits, dim=1)
    extended = dict(inputs, input_ids=out.sequences[:, :-1])
    extended["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(3, steps - 1).long()], dim=1)
    kept_ref, logits_ref = reference_fastv_qwen(model, extended, IMAGE, k=2, ratio=0.5, prompt_length=prompt)
    assert kept == kept_ref
    for row in range(len(ROWS)):
        torch.testing.assert_close(step_logits[row], logits_ref[row][-steps:], atol=1e-4, rtol=1e-4)
        assert torch.equal(step_logits[row].argmax(-1), out.sequences[row, prompt:])
