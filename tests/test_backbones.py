"""The bundled backbones: the registry, the timm-style contract for every registered model, params/MACs against the
papers, exact re-parameterisation, and the swap into a LLaVA model."""

from __future__ import annotations

import pytest
import torch

import fastvision
from fastvision.backbones import create_backbone, list_backbones, register_backbone, reparameterize
from fastvision.backbones.budgets import PAPER_BUDGETS
from fastvision.backbones.repmlpnet import RepMLPBlock, RepMLPNet
from fastvision.backbones.vheat import VHeat
from fastvision.flops.backbones import profile_backbone

EXPECTED = {
    "parameternet_600m", "parameternet_300m", "repmlpnet_t224", "repmlpnet_b224", "repmlpnet_b256", "repmlpnet_d256",
    "repmlpnet_l256", "cvt_13", "cvt_21", "vheat_tiny", "vheat_small", "vheat_base", "turbovit",
}  # fmt: skip
SMALL_INPUT = 64


def _small(name: str, **kwargs):
    """The registered model at a 64x64 input: size-bound backbones are built for it, the others take any size."""
    try:
        return create_backbone(name, img_size=SMALL_INPUT, **kwargs)
    except TypeError:
        return create_backbone(name, **kwargs)


def test_every_issue_variant_is_registered() -> None:
    assert EXPECTED <= set(list_backbones())
    assert list_backbones("repmlpnet_*") == sorted(name for name in EXPECTED if name.startswith("repmlpnet"))


def test_registry_refuses_duplicates_unknown_names_and_pretrained() -> None:
    def cvt_13(**kwargs):  # the name of a registered factory
        raise AssertionError("never built")

    list_backbones()
    with pytest.raises(ValueError, match="'cvt_13' is already registered"):
        register_backbone(cvt_13)
    with pytest.raises(ValueError, match=r"unknown backbone .resnet_9000.*cvt_13"):
        create_backbone("resnet_9000")
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_backbone("cvt_13", pretrained=True)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 0"):
        create_backbone("turbovit", num_classes=-1)
    with pytest.raises(ValueError, match="img_size must be a multiple of 32 for vHeat's 4 stages, got 100"):
        create_backbone("vheat_tiny", img_size=100)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_shapes_and_feature_info(name: str) -> None:
    torch.manual_seed(0)
    model = _small(name, num_classes=7).eval()
    x = torch.randn(2, 3, SMALL_INPUT, SMALL_INPUT)
    with torch.no_grad():
        stages = model.forward_stages(x)
        logits = model(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert pooled.shape == (2, model.num_features)
    assert len(stages) == len(model.feature_info)
    for stage, info in zip(stages, model.feature_info, strict=True):
        assert stage.shape == (2, info["num_chs"], SMALL_INPUT // info["reduction"], SMALL_INPUT // info["reduction"])
        assert model.get_submodule(info["module"]) is not None
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)


def test_features_only_returns_one_map_per_stage() -> None:
    features = _small("turbovit", features_only=True).eval()
    with torch.no_grad():
        maps = features(torch.randn(1, 3, SMALL_INPUT, SMALL_INPUT))
    assert [m.shape[1] for m in maps] == [info["num_chs"] for info in features.feature_info] == [64, 128, 256, 512]
    assert not hasattr(features.model.head, "weight")  # no classifier


@pytest.mark.parametrize("name", sorted(PAPER_BUDGETS))
def test_params_and_macs_match_the_paper(name: str) -> None:
    row = profile_backbone(name)
    budget = PAPER_BUDGETS[name]
    if budget.upper_bound:
        assert row["deployed_params"] <= budget.params_m * 1e6 and row["macs"] <= budget.gmacs * 1e9
        return
    assert abs(row["params_ratio"] - 1) <= budget.params_tolerance, row
    if name == "parameternet_600m":  # counting convention: see budgets.py and docs/backbones.md
        assert row["within_budget"] is False
        assert abs(row["macs_with_batchnorm"] / (budget.gmacs * 1e9) - 1) <= 0.01
    elif budget.gmacs is None:  # no published MACs (TRecViT): the parameters decide
        assert row["macs_ratio"] is None and row["within_budget"]
    else:
        assert abs(row["macs_ratio"] - 1) <= budget.macs_tolerance, row
        assert row["within_budget"]


def test_vheat_training_mode_counts_match_the_reference() -> None:
    row = profile_backbone("vheat_tiny")  # arXiv 2405.16555, training mode 30.85M / 4.94G
    assert abs(row["params"] / 30.85e6 - 1) < 0.01 and abs(row["training_form_macs"] / 4.94e9 - 1) < 0.01


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.2)


def test_repmlp_locality_injection_is_exact_and_leaves_no_training_branch() -> None:
    torch.manual_seed(0)
    model = RepMLPNet((16, 32, 64, 128), (1, 1, 2, 1), (1, 4, 8, 16), img_size=64, num_classes=5).eval()
    _randomise_batchnorm(model)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        deployed = reparameterize(model)
        got = deployed(x)
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-5
    blocks = [m for m in deployed.modules() if isinstance(m, RepMLPBlock)]
    assert blocks and all(b.deployed and len(b.local) == 0 and b.fc3_bn is None for b in blocks)
    assert not any(m.deployed for m in model.modules() if isinstance(m, RepMLPBlock))  # the original is kept
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_vheat_inference_mode_equals_training_mode() -> None:
    torch.manual_seed(0)
    model = VHeat((1, 1, 2, 1), 16, img_size=64, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        deployed = reparameterize(model)
        got = deployed(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    names = [name for name, _ in deployed.named_parameters()]
    assert not any("to_k" in name or "frequency_embedding" in name for name in names)
    assert sum(p.numel() for p in deployed.parameters()) < sum(p.numel() for p in model.parameters())


def test_reparameterize_is_available_at_top_level() -> None:
    assert fastvision.reparameterize is reparameterize


def _swapped_llava():
    from fastvision.testing import tiny_llava

    model = tiny_llava()
    tower = RepMLPNet((8, 16, 32, 64), (1, 1, 1, 1), (1, 2, 4, 8), img_size=32, num_classes=0)
    return fastvision.swap_vision_tower(model, tower, stage=1, seed=0), tower


def test_swap_builds_a_working_llava_whose_loss_decreases() -> None:
    from transformers import LlavaForConditionalGeneration

    from fastvision.testing import IMAGE_TOKEN_ID

    torch.manual_seed(0)
    model, tower = _swapped_llava()
    assert isinstance(model, LlavaForConditionalGeneration)
    assert model.model.vision_tower.backbone is tower
    assert model.model.multi_modal_projector.linear_1.in_features == tower.feature_info[1]["num_chs"]
    tokens = model.model.vision_tower.num_image_tokens
    assert tokens == (32 // 8) ** 2 == model.config.image_seq_length
    ids = torch.tensor([[1, *([IMAGE_TOKEN_ID] * tokens), 5, 6, 7, 8]] * 4)
    pixels = torch.randn(4, 3, 32, 32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, pixel_values=pixels, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    model.eval()  # FastV patches the swapped model like any LLaVA: the image positions come from the ids
    with torch.no_grad():
        fastvision.patch(model, k=1, ratio=0.5)
        logits = model(input_ids=ids[:1], pixel_values=pixels[:1]).logits
        assert fastvision.kept_tokens(model).num_kept_image_tokens == [tokens // 2]
        fastvision.unpatch(model)
    assert torch.isfinite(logits).all()


def test_swap_refuses_bad_input_and_leaves_the_model_untouched() -> None:
    from fastvision.testing import tiny_llava

    model = tiny_llava()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    tower_before = model.model.vision_tower
    with pytest.raises(ValueError, match="stage 9 out of range for 'vheat_tiny', which has 4 stages"):
        fastvision.swap_vision_tower(model, "vheat_tiny", stage=9, img_size=64)
    with pytest.raises(ValueError, match="unknown backbone"):
        fastvision.swap_vision_tower(model, "not_a_backbone")
    with pytest.raises(TypeError, match="LlavaForConditionalGeneration"):
        fastvision.swap_vision_tower(torch.nn.Linear(2, 2), "cvt_13")
    assert model.model.vision_tower is tower_before
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())


def test_swap_processor_inserts_the_towers_token_count() -> None:
    from PIL import Image
    from transformers import AutoProcessor

    from fastvision.backbones.vlm import swap_processor
    from fastvision.bundled import BUNDLED_MODEL
    from fastvision.bundled.build import build_model

    processor = AutoProcessor.from_pretrained(BUNDLED_MODEL)
    model = build_model(processor.tokenizer)
    fastvision.swap_vision_tower(model, "turbovit", img_size=64, stage=1)  # 64 px, stride 8: 8x8 tokens
    swapped = swap_processor(processor, model)
    inputs = swapped(text=["USER: <image> what shape is this? ASSISTANT:"], images=[Image.new("RGB", (64, 64))],
                     return_tensors="pt")  # fmt: skip
    assert inputs["pixel_values"].shape[-2:] == (64, 64)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 64
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_tower_comparison_smoke_writes_results_and_plot(tmp_path) -> None:
    from evals.experiments.towers.__main__ import main
    from fastvision.evals.results import EvalResults

    out = tmp_path / "towers"
    argv = ["--towers", "clip", "vheat", "--steps", "2", "--vision-steps", "2", "--train-limit", "48",
            "--limit", "8", "--ratio", "0.5", "--threads", "1", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = EvalResults.from_json(out / "results.json")
    assert [(row.tower, row.method) for row in results.settings] == [
        ("clip", "unpatched"), ("clip", "fastv"), ("vheat", "unpatched"), ("vheat", "fastv"),
    ]  # fmt: skip
    for row in results.settings:
        assert row.image_tokens == 64 and row.questions == 8 and row.prefill_flops > 0
        assert row.kept_image_tokens == (32 if row.method == "fastv" else 64)
    assert results.dataset["training"]["vheat"]["tower_parameters"] > 0
    assert (out / "towers.png").stat().st_size > 10_000


def test_tower_comparison_refuses_unknown_towers_and_bad_ratios() -> None:
    from evals.experiments.towers.comparison import TowerRunSettings

    with pytest.raises(ValueError, match=r"unknown tower\(s\) \['resnet'\]"):
        TowerRunSettings(towers=("clip", "resnet"))
    with pytest.raises(ValueError, match=r"ratios must lie in \[0, 1\); got \[1.0\]"):
        TowerRunSettings(ratios=(0.5, 1.0))


def test_deployed_form_benchmark_writes_paired_ratios(tmp_path) -> None:
    import json

    from fastvision.evals.benchmarks.bench_backbones import main

    out = tmp_path / "bench.json"
    assert main(["--backbones", "repmlpnet_t224", "--img-size", "64", "--batch", "1", "--repeats", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    row = json.loads(out.read_text())["rows"][0]
    assert row["deployed_time_ratio"] > 0 and row["max_relative_output_difference"] < 1e-5
    assert set(row["median_ms"]) == {"training", "deployed"} and min(row["median_ms"].values()) > 0


@pytest.mark.parametrize(("experts", "params_m"), [(1, 19.9), (2, 24.7), (8, 54.0)])
def test_parameternet_parameters_for_other_expert_counts(experts: int, params_m: float) -> None:
    from fastvision.backbones.parameternet import ParameterNet

    with torch.device("meta"):
        model = ParameterNet(width=1.9, experts=experts)
    assert abs(sum(p.numel() for p in model.parameters()) / (params_m * 1e6) - 1) < 0.01  # the paper's count
