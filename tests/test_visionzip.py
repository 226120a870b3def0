"""VisionZip (arXiv 2412.04467) on LLaVA: dominant and contextual tokens against a reference, the config, the
dispatch, generate's pre-encoded images and the refusals.

The family matrix (tests/test_families.py) runs VisionZip through the same exactness checks as FastV on LLaVA and
checks that every other family refuses it.
"""

from __future__ import annotations

import pytest
import torch

import fastvision
from fastvision.testing import llava_prompt, tiny_llava_with_one_image
from fastvision.visionzip.selection import zip_image
from tests.test_fastv_llava import hook_snapshot


def reference_zip(features, attention, keys, kept, contextual):
    """One image, with Python lists: the merged features and the kept patch set."""
    patches = len(attention)
    order = sorted(range(patches), key=lambda p: (-float(attention[p]), p))
    dominant = order[: kept - contextual]
    pool = [p for p in range(patches) if p not in dominant]
    if contextual == 0:
        return features, set(dominant)
    step = max(1, len(pool) // contextual)
    targets = pool[::step][:contextual]
    others = [p for p in pool if p not in targets]
    merged = features.clone()
    joined = {t: [] for t in targets}
    for p in others:
        similarity = [float(torch.nn.functional.cosine_similarity(keys[p], keys[t], dim=0)) for t in targets]
        joined[targets[similarity.index(max(similarity))]].append(p)
    for t, members in joined.items():
        if members:
            merged[t] = features[t] + torch.stack([features[m] for m in members]).mean(dim=0)
    return merged, set(dominant) | set(targets)


@pytest.mark.parametrize(("kept", "contextual"), [(6, 1), (8, 2), (3, 0), (12, 3)])
def test_zip_matches_the_reference(kept, contextual):
    torch.manual_seed(kept * 7 + contextual)
    features, attention, keys = torch.randn(16, 5), torch.rand(16), torch.randn(16, 4)
    merged, kept_index, scores = zip_image(features, attention, keys, kept, contextual)
    expected, expected_kept = reference_zip(features, attention, keys, kept, contextual)
    assert set(kept_index.tolist()) == expected_kept and int((scores > 0).sum()) == kept
    torch.testing.assert_close(merged, expected)


def test_the_contextual_share_follows_the_paper():
    config = fastvision.VisionZipConfig(ratio=1 - 64 / 576)
    assert config.kept_counts(576) == [64] and config.contextual_count(64) == 10  # 54 dominant + 10 contextual
    assert fastvision.VisionZipConfig.from_dict(config.to_dict()) == config
    for bad, message in [({"ratio": 1.0}, "VisionZip ratio=1.0 is out of range"),
                         ({"contextual_share": 1.0}, "contextual_share=1.0 is out of range")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            fastvision.VisionZipConfig(**bad)


@pytest.fixture(scope="module")
def llava():
    return tiny_llava_with_one_image()


@torch.no_grad()
def test_generate_with_pre_encoded_images_uses_the_towers_choice(llava):
    """generate encodes the images before the forward; the kept set is still the tower's, and equals a forward's."""
    model, inputs = llava
    with fastvision.patched(model, method="visionzip", ratio=0.75):
        model(**inputs)
        forward_kept = fastvision.kept_tokens(model).kept_mask.clone()
        model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=0)
        generate_kept = fastvision.kept_tokens(model).kept_mask
    assert torch.equal(forward_kept, generate_kept) and int(forward_kept.sum()) == inputs["input_ids"].shape[1] - 12


@torch.no_grad()
def test_the_merge_changes_only_the_contextual_targets(llava):
    model, inputs = llava
    captured = {}
    projector = model.model.multi_modal_projector
    with fastvision.patched(model, fastvision.VisionZipConfig(ratio=0.5)):  # observer after VisionZip's pre-hook
        hook = projector.register_forward_pre_hook(lambda module, args: captured.setdefault("zipped", args[0]))
        model(**inputs)
        hook.remove()
    hook = projector.register_forward_pre_hook(lambda module, args: captured.setdefault("plain", args[0]))
    model(**inputs)
    hook.remove()
    changed = (captured["zipped"] != captured["plain"]).any(dim=-1)[0]
    assert 1 <= int(changed.sum()) <= fastvision.VisionZipConfig(ratio=0.5).contextual_count(8)


def test_models_without_a_usable_cls_tower_are_refused(llava):
    model, _ = llava
    hooks = hook_snapshot(model)
    model.config.vision_feature_select_strategy = "full"
    try:
        with pytest.raises(ValueError, match="VisionZip needs LLaVA's 'default' feature strategy"):
            fastvision.patch(model, method="visionzip", ratio=0.5)
    finally:
        model.config.vision_feature_select_strategy = "default"
    with pytest.raises(TypeError, match=r"\['k'\] do not apply to VisionZip"):
        fastvision.patch(model, method="visionzip", k=2)
    assert not fastvision.is_patched(model) and hook_snapshot(model) == hooks


@torch.no_grad()
def test_a_prompt_ending_in_an_image_token_keeps_its_last_token(llava):
    model, inputs = llava
    ids = torch.tensor([llava_prompt(model, [5, 6], [])])  # the image is the prompt's end
    with fastvision.patched(model, method="visionzip", ratio=0.75):
        model(input_ids=ids, pixel_values=inputs["pixel_values"])
        record = fastvision.kept_tokens(model)
    assert bool(record.kept_mask[0, -1]) and 4 <= record.num_kept_visual_tokens[0] <= 5


@torch.no_grad()
def test_an_earlier_tower_pass_is_never_applied_to_another_forward(llava):
    """get_image_features alone, then a forward without images of its own: refused, not the stale choice."""
    model, inputs = llava
    with fastvision.patched(model, method="visionzip", ratio=0.75):
        model.model.get_image_features(pixel_values=inputs["pixel_values"])
        with pytest.raises(RuntimeError, match="no image passed through it for this prefill"):
            model(input_ids=inputs["input_ids"])
        model(**inputs)  # and the next forward with pixels works again
        assert fastvision.kept_tokens(model).num_kept_visual_tokens == [4]
