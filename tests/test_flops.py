"""Measured FLOPs (FlopCounterMode) agree with the analytic model, pruned and unpruned."""

from __future__ import annotations

import json

import pytest
import torch

import fastvision
from fastvision.cli.main import main
from fastvision.flops import DecoderShape, decoder_layer_macs, fastv_paper_macs, fastv_prefill_macs, measure_flops
from fastvision.flops.presets import count_prefill_flops, preset_config
from fastvision.testing import llava_prompt, tiny_llava

pytestmark = pytest.mark.engine


def _language_flops(model, inputs) -> int:
    report, _ = measure_flops(lambda: model(**inputs, logits_to_keep=1))
    return report.module("model.language_model") + report.module("lm_head")


@torch.no_grad()
@pytest.mark.parametrize("backbone", ["llama", "qwen2"])
@pytest.mark.parametrize(
    ("k", "ratio", "scoring"),
    [(None, 0.0, "last"), (2, 0.5, "last"), (1, 0.75, "mean"), (2, 0.5, "stride"), (2, 0.75, "pool")],
)
def test_measured_flops_equal_analytic(backbone, k, ratio, scoring):
    model = tiny_llava(backbone)
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8, 9])])
    inputs = {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)}
    shape = DecoderShape.from_config(model.config.text_config)
    tokens = ids.shape[1]
    if k is None:
        measured = _language_flops(model, inputs)
        analytic = 2 * fastv_prefill_macs(shape, tokens)
    else:
        with fastvision.patched(model, k=k, ratio=ratio, scoring=scoring):
            measured = _language_flops(model, inputs)
        kept = tokens - fastvision.FastVConfig(k=k, ratio=ratio).num_dropped(16)
        analytic = 2 * fastv_prefill_macs(shape, tokens, k=k, kept_tokens=kept, scoring=scoring)
    _assert_matches(measured, analytic, scoring)


def _assert_matches(measured: int, analytic: int, scoring: str) -> None:
    """'last' and the baselines are counted exactly; 'mean' within 1e-3."""
    if scoring != "mean":
        assert measured == analytic
    else:
        assert measured == pytest.approx(analytic, rel=1e-3)


def test_cpu_sdpa_is_counted():
    q = k = v = torch.randn(1, 2, 8, 4)
    report, _ = measure_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert report.total == 2 * (2 * 2 * 8 * 8 * 4)


def test_layer_formula_reduces_to_fastv_paper():
    shape = DecoderShape(hidden=64, ffn=256, layers=4, heads=4, kv_heads=4, head_dim=16, vocab=10, ffn_matrices=2)
    n = 30
    assert decoder_layer_macs(shape, n) == 4 * n * 64**2 + 2 * n**2 * 64 + 2 * n * 64 * 256
    assert 4 * decoder_layer_macs(shape, n) == fastv_paper_macs(64, 256, 4, n)


def test_real_size_preset_counts_without_weights():
    config = preset_config("llava-1.5-7b")
    fastv = fastvision.FastVConfig(k=2, ratio=0.5)
    pruned = count_prefill_flops(config, text_tokens=60, fastv=fastv)
    shape = DecoderShape.from_config(config.text_config)
    assert pruned.kept_image_tokens == 288
    assert pruned.language == 2 * fastv_prefill_macs(shape, 636, k=2, kept_tokens=636 - 288)
    assert pruned.vision > 0


def test_flops_cli_json(capsys):
    assert main(["flops", "llava-1.5-7b", "--ratio", "0.5", "0.75", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_tokens"] == 576
    ratios = [row["language_ratio"] for row in result["settings"]]
    assert 0.5 < ratios[0] < 0.6 and 0.3 < ratios[1] < 0.4
    for row in result["settings"]:
        assert row["language_flops"] == row["analytic_language_flops"]


def test_flops_cli_bad_input(capsys):
    assert main(["flops", "llava-1.5-7b", "--k", "32"]) == 2
    assert "allowed is 1 <= k < 32" in capsys.readouterr().err


def test_local_config_json_loads(tmp_path):
    from fastvision.flops.presets import load_config

    preset_config("llava-1.5-13b").save_pretrained(tmp_path)
    for source in (tmp_path / "config.json", tmp_path):
        assert load_config(str(source)).text_config.hidden_size == 5120
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'model_type'"):
        load_config(str(tmp_path / "bad.json"))


@torch.no_grad()
@pytest.mark.parametrize("scoring", ["last", "mean"])
def test_schedule_flops_equal_analytic(scoring):
    model = tiny_llava("llama")
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8, 9])])
    config = fastvision.FastVConfig(schedule=[(1, 0.5), (3, 0.75)], scoring=scoring)
    with fastvision.patched(model, config):
        measured = _language_flops(model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)})
    text = ids.shape[1] - 16
    stages = [(layer, text + kept) for (layer, _), kept in zip(config.stages, config.kept_counts(16), strict=True)]
    assert config.kept_counts(16) == [8, 2]
    shape = DecoderShape.from_config(model.config.text_config)
    analytic = 2 * fastv_prefill_macs(shape, ids.shape[1], stages=stages, scoring=scoring)
    _assert_matches(measured, analytic, scoring)


@pytest.mark.parametrize("preset", ["qwen2-vl-7b", "qwen2.5-vl-7b"])
def test_qwen_presets_count_the_language_model(preset, capsys):
    assert main(["flops", preset, "--ratio", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_tokens"] == 256 and result["vision_counted"] is False
    (row,) = result["settings"]
    assert row["kept_image_tokens"] == 128 and row["total_flops"] is None
    assert row["language_flops"] == row["analytic_language_flops"]
    assert result["baseline"]["language_flops"] == result["baseline"]["analytic_language_flops"]


def test_flops_cli_schedule(capsys):
    assert main(["flops", "llava-1.5-7b", "--schedule", "2:0.5", "16:0.5", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["settings"]
    assert row["config"]["schedule"] == [[2, 0.5], [16, 0.5]]
    assert row["kept_image_tokens"] == 144
    assert row["language_flops"] == row["analytic_language_flops"]
    assert main(["flops", "llava-1.5-7b", "--schedule", "2-0.5"]) == 2
    assert "LAYER:RATIO" in capsys.readouterr().err
