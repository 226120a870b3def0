"""``fastvision card``: Hub model cards from the committed ``fastvision eval`` results, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from fastvision.cli.main import main
from fastvision.evals.card_sources import load_card_source
from fastvision.evals.model_card import write_card
from fastvision.evals.results import EvalResults

RESULTS = Path(__file__).resolve().parents[1] / "evals" / "results" / "easyvqa" / "results.json"


def test_card_from_eval_results_loads_back_with_the_same_numbers(tmp_path: Path) -> None:
    readme = write_card(load_card_source(RESULTS), tmp_path, base_model="llava-hf/llava-1.5-7b-hf")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    card = ModelCard.load(readme)
    assert card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model == "llava-hf/llava-1.5-7b-hf"
    assert "fastvision" in card.data.tags
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == card.data.model_name
    values = {(r.metric_config, r.metric_type): r.metric_value for r in results}
    expected = EvalResults.from_json(RESULTS)
    assert len(values) == 2 * len(expected.settings)
    for row in expected.settings:
        assert values[(row.name, "accuracy")] == row.accuracy
        assert values[(row.name, "relative_prefill_flops")] == row.relative_flops
    assert {r.dataset_type for r in results} == {"easy-vqa"}
    assert "![Accuracy against relative prefill FLOPs](pareto.png)" in card.text
    assert "fastvision eval --task easyvqa --limit" in card.text  # how to reproduce
    assert "--methods fastv,dart,divprune,visionzip,random,stride,pool" in card.text  # every method of the run


def test_an_lm_eval_run_of_another_method_is_named_by_it(tmp_path: Path) -> None:
    (original,) = (RESULTS.parents[1] / "lm-eval").rglob("results_*.json")
    data = json.loads(original.read_text())
    data["config"]["fastvision"]["config"] = {"method": "dart", "version": 1, "k": 2, "ratio": 0.5,
                                              "image_pivots": 4, "text_pivots": 4, "modality": "all"}  # fmt: skip
    path = tmp_path / "results_dart.json"
    path.write_text(json.dumps(data))
    (row,) = [row for row in load_card_source(path).rows if row.method != "unpatched"]
    assert (row.method, row.name) == ("dart", "dart K=2 R=0.5")


def test_recommended_config_is_the_cheapest_within_a_point_of_the_baseline(tmp_path: Path) -> None:
    source = load_card_source(RESULTS)
    recommended = source.recommended()
    base = source.baseline()
    assert base is not None and recommended.accuracy >= base.accuracy - 0.01
    cheaper = [r for r in source.rows if r.method == "fastv" and r.relative_flops < recommended.relative_flops]
    assert all(r.accuracy < base.accuracy - 0.01 for r in cheaper)
    card = ModelCard.load(write_card(source, tmp_path))
    assert card.data.fastvision["recommended"] == recommended.config
    assert f"fastvision.patch(model, k={recommended.config['k']}, ratio={recommended.config['ratio']})" in card.text


def test_card_command_writes_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["card", str(RESULTS), "--out", str(tmp_path / "card"), "--name", "easy-VQA LLaVA + FastV"]) == 0
    assert ModelCard.load(tmp_path / "card" / "README.md").data.model_name == "easy-VQA LLaVA + FastV"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {", "is not JSON"),
        (json.dumps({"schema": "someone.else/3", "rows": []}), "neither a fastvision eval results file"),
        (json.dumps([1, 2, 3]), "neither a fastvision eval results file"),
        (json.dumps({"schema": "fastvision.eval/1", "settings": [{"name": "x"}]}), "Malformed"),
        (json.dumps({"results": {"easyvqa": {}}, "config": {"model": "hf"}}), "not from the fastvision model"),
        (
            json.dumps({"results": {"easyvqa": {}}, "config": {"fastvision": {"config": {"k": 2, "ratio": 0.5}}}}),
            "fastv_measure=false",
        ),
    ],
)
def test_bad_results_files_are_refused(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_card_source(path)
    assert main(["card", str(path), "--out", str(tmp_path / "card")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "card").exists()  # nothing half-written


def test_missing_results_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["card", str(tmp_path / "nope.json")]) == 2
    assert "No results file" in capsys.readouterr().err


def test_push_offline_fails_clearly_and_keeps_the_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "card"
    assert main(["card", str(RESULTS), "--out", str(out), "--push", "someone/easyvqa-fastv"]) == 2
    error = capsys.readouterr().err
    assert "someone/easyvqa-fastv" in error and str(out / "README.md") in error
    assert ModelCard.load(out / "README.md").data.pipeline_tag == "image-text-to-text"


def test_card_recommends_nothing_when_no_setting_is_close_enough(tmp_path: Path) -> None:
    """Every FastV row of the committed run pushed 0.02 below the unpatched accuracy: no row may be recommended."""
    data = json.loads(RESULTS.read_text())
    base = next(row for row in data["settings"] if row["method"] == "unpatched")["accuracy"]
    for row in data["settings"]:
        if row["method"] == "fastv":
            row["config"]["scoring"] = "mean"
            if row["config"]["ratio"] > 0:
                row["accuracy"] = base - 0.02
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    source = load_card_source(path)
    assert source.recommended() is None
    card = ModelCard.load(write_card(source, tmp_path / "card"))
    assert card.data.fastvision["recommended"] is None
    assert "recommends none" in card.text and "within 0.01 of the unpatched model's." not in card.text
    assert "averaged over every prompt token" in card.text  # the scoring every FastV row of the run used
    assert "no setting recommended" in card.data.model_name


def test_card_names_the_scoring_it_recommends(tmp_path: Path) -> None:
    data = json.loads(RESULTS.read_text())
    for row in data["settings"]:
        if row["method"] == "fastv":
            row["config"]["scoring"] = "mean"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    card = ModelCard.load(write_card(load_card_source(path), tmp_path / "card"))
    assert "averaged over every prompt token" in card.text and "last prompt token" not in card.text
    assert 'scoring="mean")' in card.text
