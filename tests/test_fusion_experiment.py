"""The intermediate-fusion experiment's parts: captioned renders, the attribute classifier that judges alignment,
the Fréchet distance, and a smoke run of ``python -m evals.experiments.fusion`` that writes its three files."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from evals.experiments.fusion.classifier import attribute_accuracy, frechet_distance, train_classifier
from evals.experiments.fusion.data import COLORS, POSITIONS, SHAPES, VOCABULARY, caption, make_dataset, tokenize


def test_captions_name_every_attribute_in_six_known_words() -> None:
    data = make_dataset(64, seed=0)
    assert data.images.shape == (64, 3, 32, 32) and data.tokens.shape == (64, 6)
    assert float(data.images.min()) >= -1 and float(data.images.max()) <= 1
    for (color, shape, position), tokens in zip(data.labels.tolist(), data.tokens.tolist(), strict=True):
        words = [VOCABULARY[token] for token in tokens]
        assert words == caption(list(COLORS)[color], SHAPES[shape], list(POSITIONS)[position]).split()
    assert tokenize("") == [VOCABULARY.index("<null>")] * 6
    with pytest.raises(ValueError, match="Captions are 6 words"):
        tokenize("a purple circle on the left")
    assert torch.equal(make_dataset(8, seed=3).images, make_dataset(8, seed=3).images)  # reproducible
    small, large = make_dataset(8, seed=3, radius=(3, 3)), make_dataset(8, seed=3, radius=(10, 10))
    assert torch.equal(small.labels, large.labels)
    painted = [(data.images < 0.8).any(dim=1).sum(dim=(1, 2)) for data in (small, large)]  # background is 0.84
    assert bool((painted[0] < painted[1]).all())


def test_attribute_classifier_reads_real_renders() -> None:
    judge = train_classifier(make_dataset(4000, seed=2024), steps=300, seed=0)
    held_out = make_dataset(400, seed=11)
    accuracy = attribute_accuracy(judge, held_out.images, held_out.labels)
    assert min(accuracy["color"], accuracy["shape"], accuracy["position"]) >= 0.95, accuracy


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    features = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(features, features + 1.0) == pytest.approx(8.0, rel=1e-6)


def test_fusion_study_smoke_writes_results_plot_and_samples(tmp_path, monkeypatch) -> None:
    """The study's command line on tiny settings, two worker processes; every run equals the same run in process."""
    import evals.experiments.fusion.experiment as experiment
    from evals.experiments.fusion.__main__ import main

    tiny = experiment.FusionRunSettings(steps=3, seeds=(0, 1), samples=8, sample_steps=2, train_images=128,
                                        judge_steps=5, timing_rounds=1, ema_decay=0.9)  # fmt: skip
    monkeypatch.setattr(experiment, "QUICK", tiny)
    assert main(["--quick", "--workers", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["schema"] == "fastvision.fusion/1" and len(results["runs"]) == 3 * 2
    assert results["settings"]["workers"] == 2 and results["settings"]["model"]["embed_dim"] == 96
    in_process = experiment.run_fusion_experiment(dataclasses.replace(tiny, workers=1))["runs"]
    strip = [{key: value for key, value in run.items() if key != "seconds"} for run in in_process]
    assert [{key: value for key, value in run.items() if key != "seconds"} for run in results["runs"]] == strip
    summary = results["summary"]
    assert set(summary) == set(experiment.VARIANTS)
    early, cross = summary["early (U-ViT)"], summary["intermediate cross c1 v2"]
    assert early["flops_ratio"] == 1.0 and cross["flops_ratio"] < 1.0
    assert all(0.0 <= row["alignment_all"]["mean"] <= 1.0 for row in summary.values())
    for name in ("fusion.png", "samples.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--x0-weight-floor", "0"], "--x0-weight-floor must be > 0, got 0.0"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--shape-radius", "9", "3"], "--shape-radius needs 2 <= LOW <= HIGH <= 12 pixels, got 9 3"),
    ],
)
def test_fusion_study_refuses_bad_settings_before_work(option, message, capsys) -> None:
    from evals.experiments.fusion.__main__ import main

    assert main([*option]) == 2
    assert message in capsys.readouterr().err


def test_fusion_study_ablation_options_reach_the_run(tmp_path, monkeypatch) -> None:
    """--variants, --pos-embed-init and --shape-radius: one variant trained, on the asked model and renders."""
    import evals.experiments.fusion.experiment as experiment
    from evals.experiments.fusion.__main__ import main

    tiny = experiment.FusionRunSettings(steps=2, seeds=(0,), samples=4, sample_steps=2, train_images=32,
                                        judge_steps=2, timing_rounds=1)  # fmt: skip
    monkeypatch.setattr(experiment, "QUICK", tiny)
    options = ["--variants", "cross", "--pos-embed-init", "random", "--shape-radius", "5", "6", "--workers", "1"]
    assert main(["--quick", *options, "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["summary"]) == ["intermediate cross c1 v2"] and len(results["runs"]) == 1
    assert results["summary"]["intermediate cross c1 v2"]["flops_ratio"] == 1.0  # its own baseline
    assert results["model"]["pos_embed_init"] == "random" and results["settings"]["shape_radius"] == [5, 6]
    assert (tmp_path / "fusion.png").read_bytes()[:4] == b"\x89PNG"
