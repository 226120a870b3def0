"""Every supported family, on tiny configs of its real transformers classes: the exactness contract of FastV."""

from __future__ import annotations

import pytest
import torch

import fastvision
from fastvision.dart.config import DARTConfig
from fastvision.dart.selection import dart_similarity_macs
from fastvision.divprune.config import DivPruneConfig
from fastvision.divprune.selection import divprune_macs
from fastvision.fastv.engine import FastVEngine
from fastvision.flops import DecoderShape, fastv_prefill_macs, measure_flops
from fastvision.visionzip.config import VisionZipConfig
from tests.families import FAMILIES, IMAGE, VIDEO, batch
from tests.test_fastv_llava import hook_snapshot

pytestmark = pytest.mark.engine


# Every token-reduction method that runs on the engine passes the same matrix.
METHODS = {
    "fastv": lambda ratio: fastvision.FastVConfig(k=2, ratio=ratio),
    "dart": lambda ratio: DARTConfig(k=2, ratio=ratio),
    "divprune": lambda ratio: DivPruneConfig(ratio=ratio),  # before the language model: layer 0 is pruned too
    "visionzip": lambda ratio: VisionZipConfig(ratio=ratio),  # chosen in the vision tower, pruned from layer 0
}


# Deepstack features enter Qwen3-VL's first layers, so nothing prunes before them; VisionZip needs a CLIP tower
# whose patches are the image tokens, which only LLaVA has.
REFUSED = {("qwen3_vl", "divprune")} | {(name, "visionzip") for name in FAMILIES if name != "llava"}


@pytest.fixture(params=sorted(METHODS))
def method(request, family_model):
    if (family_model[0].name, request.param) in REFUSED:
        pytest.skip(f"{request.param} is refused on {family_model[0].name} (test_refused_pairs_fail_at_patch_time)")
    return METHODS[request.param]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request):
    family = FAMILIES[request.param]
    return family, family.make()


def test_refused_pairs_fail_at_patch_time():
    model = FAMILIES["qwen3_vl"].make()
    hooks = hook_snapshot(model)
    with pytest.raises(ValueError, match=r"so DivPrune needs k >= 2; prunes before the language model \(k=0\)"):
        fastvision.patch(model, METHODS["divprune"](0.5))
    assert not fastvision.is_patched(model) and hook_snapshot(model) == hooks
    for name in sorted(FAMILIES):
        if (name, "visionzip") in REFUSED:
            other = FAMILIES[name].make()
            hooks = hook_snapshot(other)
            with pytest.raises(ValueError, match=r"VisionZip reads the \[CLS\] attention|VisionZip needs"):
                fastvision.patch(other, METHODS["visionzip"](0.5))
            assert not fastvision.is_patched(other) and hook_snapshot(other) == hooks


def _rows(family):
    second = ["video"] if family.video is not None else ["image", "image"]
    return [([5, 6], ["image"], [7, 8, 9]), ([5], [], [7, 8]), ([5, 12], second, [7])]


def _greedy(model, inputs, steps=3):
    out = model.generate(
        **inputs, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True,
        pad_token_id=0, suppress_tokens=[IMAGE, VIDEO],  # a generated placeholder would be a new, pixel-less image
    )  # fmt: skip
    return out.sequences, torch.stack(out.logits, dim=1)


@torch.no_grad()
def test_ratio_zero_and_unpatch_are_bit_identical(family_model, method):
    family, model = family_model
    inputs = batch(family, model, _rows(family))
    baseline = model(**inputs).logits
    tokens, logits = _greedy(model, inputs)
    hooks = hook_snapshot(model)
    with fastvision.patched(model, method(ratio=0.0)):
        assert torch.equal(model(**inputs).logits, baseline)
        assert torch.equal(_greedy(model, inputs)[0], tokens)
    fastvision.patch(model, method(ratio=0.75))
    model(**inputs)
    record = fastvision.kept_tokens(model)
    assert [n - n * 3 // 4 for n in record.num_visual_tokens] == record.num_kept_visual_tokens
    assert record.num_visual_tokens[0] > 0 and record.num_visual_tokens[1] == 0
    fastvision.unpatch(model)
    assert hook_snapshot(model) == hooks
    assert torch.equal(model(**inputs).logits, baseline)
    new_tokens, new_logits = _greedy(model, inputs)
    assert torch.equal(new_tokens, tokens) and torch.equal(new_logits, logits)


@torch.no_grad()
def test_batched_rows_equal_single_runs(family_model, method):
    family, model = family_model
    rows = _rows(family)
    with fastvision.patched(model, method(ratio=0.5)):
        batched, batched_logits = _greedy(model, batch(family, model, rows))
        counts = fastvision.kept_tokens(model).num_kept_visual_tokens
        for index, row in enumerate(rows):
            single, single_logits = _greedy(model, batch(family, model, [row], seeds=[index]))
            assert torch.equal(batched[index, -3:], single[0, -3:])
            torch.testing.assert_close(batched_logits[index], single_logits[0], atol=1e-4, rtol=1e-4)
            if row[1]:
                assert fastvision.kept_tokens(model).num_kept_visual_tokens == [counts[index]]


@torch.no_grad()
@pytest.mark.parametrize(
    "config",
    [
        fastvision.FastVConfig(k=2, ratio=0.5),
        fastvision.FastVConfig(schedule=[(2, 0.5), (3, 0.5)]),
        DARTConfig(k=2, ratio=0.5),
        DivPruneConfig(ratio=0.5),
        VisionZipConfig(ratio=0.5),
    ],
    ids=["fastv", "schedule", "dart", "divprune", "visionzip"],
)
def test_cached_generation_equals_recomputation(family_model, config, monkeypatch):
    """generate's cached decode equals a no-cache forward over prompt + generated tokens with the same kept set."""
    family, model = family_model
    if (family.name, config.method) in REFUSED:
        pytest.skip(f"{config.method} is refused on {family.name} (test_refused_pairs_fail_at_patch_time)")
    inputs = batch(family, model, _rows(family))
    prompt = inputs["input_ids"].shape[1]
    with fastvision.patched(model, config):
        sequences, step_logits = _greedy(model, inputs)
        kept = fastvision.kept_tokens(model).kept_mask.clone()
        steps = step_logits.shape[1]
        extended = dict(inputs, input_ids=sequences[:, :-1])
        extended["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(3, steps - 1).long()], dim=1)
        if family.token_types is not None:
            types = inputs[family.token_types]
            extended[family.token_types] = torch.cat([types, torch.zeros(3, steps - 1).long()], dim=1)
        original = FastVEngine._prefill_context

        def score_at_prompt_end(self, prunable, attention_mask):  # the last *prompt* token scores, as in generate
            context = original(self, prunable, attention_mask)
            context.last_positions = torch.full_like(context.last_positions, prompt - 1)
            return context

        monkeypatch.setattr(FastVEngine, "_prefill_context", score_at_prompt_end)
        full = model(**extended, position_ids=_generation_positions(model, extended)).logits
        assert torch.equal(fastvision.kept_tokens(model).kept_mask[:, :prompt], kept)
    torch.testing.assert_close(full[:, -steps:], step_logits, atol=1e-4, rtol=1e-4)


def _generation_positions(model, inputs):
    """Position ids as generate builds them (left padding skipped); None lets M-RoPE models compute theirs."""
    if model.config.model_type.startswith("qwen"):
        return None
    return (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def test_measured_language_flops_equal_analytic(family_model, method):
    family, model = family_model
    inputs = batch(family, model, [([5, 6], ["image"], [7, 8, 9])])
    inputs.pop("attention_mask")
    tokens = inputs["input_ids"].shape[1]
    images = int((inputs["input_ids"] == IMAGE).sum())
    names = {module: name for name, module in model.named_modules()}
    language = names[model.model.language_model]
    shape = DecoderShape.from_config(model.config.text_config)
    config = method(ratio=0.5)
    with fastvision.patched(model, config):
        report, _ = measure_flops(lambda: model(**inputs, logits_to_keep=1))
    kept = tokens - config.num_dropped(images)
    k = config.stages[0][0]
    analytic = 2 * fastv_prefill_macs(shape, tokens, k=k, kept_tokens=kept, scoring=config.scoring)
    if config.scoring == "dart":  # the cosine similarities of the image candidates to 4 image + 3 text pivots
        analytic += 2 * dart_similarity_macs(images - 4, shape.hidden, 4 + 3)
    if config.scoring == "divprune":  # the pairwise cosine similarities of the image tokens
        analytic += 2 * divprune_macs(images, shape.hidden)
    assert report.module(language) + report.module("lm_head") == analytic


@torch.no_grad()
@pytest.mark.parametrize("modality", ["image", "video"])
def test_modality_option_prunes_one_kind_only(modality):
    family = FAMILIES["qwen2_vl"]
    model = family.make()
    inputs = batch(family, model, [([5], ["image", "video"], [7, 8])])
    token = IMAGE if modality == "image" else VIDEO
    other = VIDEO if modality == "image" else IMAGE
    with fastvision.patched(model, k=2, ratio=0.5, modality=modality):
        model(**inputs)
        record = fastvision.kept_tokens(model)
    ids = inputs["input_ids"][0]
    kept = record.kept_mask[0]
    assert bool(kept[ids == other].all())
    assert int(kept[ids == token].sum()) == int((ids == token).sum()) - int((ids == token).sum()) // 2


def test_qwen3_vl_needs_k_at_least_the_deepstack_depth():
    model = FAMILIES["qwen3_vl"].make()
    hooks = hook_snapshot(model)
    for bad in ({"k": 1}, {"schedule": [(1, 0.5), (3, 0.5)]}):
        with pytest.raises(ValueError, match=r"first 2 layers, so FastV needs k >= 2; got k=1"):
            fastvision.patch(model, **bad)
        assert not fastvision.is_patched(model) and hook_snapshot(model) == hooks


@torch.no_grad()
@pytest.mark.parametrize("name", ["gemma3", "aya_vision"])
def test_sequences_beyond_the_sliding_window_are_refused(name):
    family = FAMILIES[name]
    model = family.make()
    inputs = batch(family, model, [([5, 6], ["image"], [7, 8, 9])])
    model.config.text_config.sliding_window = 8  # shorter than the prompt
    with fastvision.patched(model, k=2, ratio=0.5), pytest.raises(NotImplementedError, match="sliding_window=8"):
        model(**inputs)
