"""easy-VQA data, the bundled checkpoint, the training recipe's smoke run and ``fastvision eval``."""

from __future__ import annotations

import json

import pytest
import torch

import fastvision
from fastvision.bundled import BUNDLED_MODEL
from fastvision.cli.main import main
from fastvision.evals.data import easyvqa_answers, load_easyvqa
from fastvision.evals.results import SCHEMA, EvalResults


def test_easyvqa_splits_and_fields():
    test = load_easyvqa("test")
    assert len(test) == 9673
    assert set(test.column_names) == {"image", "question", "answer", "image_id"}
    assert test.features["image"].__class__.__name__ == "Image"
    first = test[0]
    assert first["image"].size == (64, 64)
    assert first["answer"] in easyvqa_answers() and len(easyvqa_answers()) == 13
    assert len(load_easyvqa("train", limit=10)) == 10
    assert len(load_easyvqa("train")) == 38575
    with pytest.raises(ValueError, match="Unknown easy-VQA split 'val'"):
        load_easyvqa("val")


@torch.no_grad()
def test_bundled_checkpoint_loads_with_plain_transformers_and_answers():
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from fastvision.evals.vqa import exact_match_accuracy

    model = LlavaForConditionalGeneration.from_pretrained(BUNDLED_MODEL).eval()
    processor = AutoProcessor.from_pretrained(BUNDLED_MODEL)
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    subset = load_easyvqa("test", limit=200)
    assert exact_match_accuracy(model, processor, subset) >= 0.9


def test_training_recipe_smoke(tmp_path):
    from transformers import LlavaForConditionalGeneration

    from fastvision.bundled.train import train_bundled

    record = train_bundled(
        tmp_path, steps=4, vision_steps=4, batch_size=8, train_limit=64, check_questions=16, progress=False
    )
    assert record["steps"] == 4 and record["vision_steps"] == 4 and record["train_questions"] == 64
    assert record["vision_images"] > 0 and torch.isfinite(torch.tensor(record["vision_final_loss"]))
    assert torch.isfinite(torch.tensor(record["final_loss_mean_last_50"]))
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "training.json").is_file()
    saved = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert saved.config.text_config.num_hidden_layers == 4
    # The recorded accuracy is the saved model's, on the first 16 test questions, as the reloaded files give it.
    from transformers import AutoProcessor

    from fastvision.evals.vqa import exact_match_accuracy

    processor = AutoProcessor.from_pretrained(tmp_path)
    assert record["test_accuracy_first_16"] == exact_match_accuracy(saved, processor, load_easyvqa("test", limit=16))


def test_eval_smoke_sweep_writes_results_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["eval", "--task", "easyvqa", "--limit", "12", "--k", "1", "2", "--ratio", "0", "0.5", "--batch-size", "6"]
    args += ["--out", str(out)]
    assert main([*args, "--stride", "--quiet"]) == 0
    results = EvalResults.from_json(out / "results.json")
    assert results.schema == SCHEMA and results.dataset == {"name": "easy-vqa", "split": "test", "questions": 12}
    names = [row.name for row in results.settings]
    assert names == ["unpatched", "fastv K=1 R=0", "fastv K=1 R=0.5", "fastv K=2 R=0", "fastv K=2 R=0.5",
                     "random K=2 R=0.5", "stride K=2 R=0.5"]  # fmt: skip
    baseline = results.baseline()
    assert baseline.relative_flops == 1.0 and baseline.kept_image_tokens == baseline.image_tokens == 144
    by_name = {row.name: row for row in results.settings}
    assert by_name["fastv K=2 R=0"].accuracy == baseline.accuracy
    assert by_name["fastv K=2 R=0.5"].kept_image_tokens == 72
    # The baselines keep as many tokens as FastV at the same ratio, and cost the same FLOPs or less (no score row).
    for baseline_name in ("random K=2 R=0.5", "stride K=2 R=0.5"):
        assert by_name[baseline_name].kept_image_tokens == 72
        assert by_name[baseline_name].prefill_flops < by_name["fastv K=2 R=0.5"].prefill_flops
    # Pruning saves FLOPs, and pruning after layer 1 saves more than after layer 2.
    assert by_name["fastv K=1 R=0.5"].relative_flops < by_name["fastv K=2 R=0.5"].relative_flops < 1.0
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fastv K=2 R=0.5" in capsys.readouterr().out


def test_eval_methods_flag_sweeps_the_named_methods_at_equal_token_counts(tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--task", "digits", "--limit", "8", "--k", "2", "--ratio", "0.75", "--batch-size", "8"]
    assert main([*args, "--methods", "fastv,dart,divprune,visionzip,pool", "--out", str(out), "--quiet"]) == 0
    results = EvalResults.from_json(out / "results.json")
    by_name = {row.name: row for row in results.settings}
    assert list(by_name) == ["unpatched", "fastv K=2 R=0.75", "dart K=2 R=0.75", "divprune K=0 R=0.75",
                             "visionzip K=0 R=0.75", "pool K=2 R=0.75"]  # fmt: skip
    # DivPrune prunes before the language model, so it costs less than any method pruning after layer 2.
    assert by_name["divprune K=0 R=0.75"].relative_flops < by_name["pool K=2 R=0.75"].relative_flops
    assert by_name["dart K=2 R=0.75"].config == fastvision.DARTConfig(k=2, ratio=0.75).to_dict()
    assert {row.kept_image_tokens for name, row in by_name.items() if name != "unpatched"} == {36}
    assert by_name["dart K=2 R=0.75"].relative_flops < 1.0
    assert (out / "pareto.png").exists()


def test_results_round_trip_and_reject_foreign_files(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["eval", "--limit", "4", "--k", "2", "--ratio", "0.5", "--no-random", "--out", str(out), "--quiet"]) == 0
    )
    results = EvalResults.from_json(out / "results.json")
    again = EvalResults.from_json(results.to_json(tmp_path / "copy.json"))
    assert again == results
    (tmp_path / "other.json").write_text(json.dumps({"results": {}}))
    with pytest.raises(ValueError, match="Not a fastvision eval results file"):
        EvalResults.from_json(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text(json.dumps({"schema": SCHEMA, "model": "m"}))
    with pytest.raises(ValueError, match="Malformed"):
        EvalResults.from_json(tmp_path / "broken.json")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "1.0"], "0 <= ratio < 1"),
        (["--k", "0"], "k=0 is out of range"),
        (["--k", "8"], "allowed is 1 <= k < 8"),  # the default (digits) model has 8 layers
        (["--task", "easyvqa", "--k", "4"], "allowed is 1 <= k < 4"),
        (["--model", "/nonexistent/model"], "Cannot load model"),
        (["--task", "easyvqa", "--split", "val"], "Unknown easy-VQA split"),
        (["--limit", "-1"], "--limit must be >= 0"),
        (["--methods", "fastv,visionzap"], "Unknown sweep method(s) ['visionzap']; allowed: fastv, dart"),
        (["--methods", "fastv", "--pool"], "Pass either --methods or --no-random/--stride/--pool"),
    ],
)
def test_eval_bad_input_fails_before_work(args, message, tmp_path, capsys):
    assert main(["eval", *args, "--out", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_eval_dataset_needs_image_question_answer_columns(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("picture,prompt,label\na.png,what?,yes\n")
    assert main(["eval", "--dataset", str(folder), "--split", "train", "--out", str(tmp_path), "--quiet"]) == 2
    assert "lacks the column(s) ['image', 'question', 'answer']" in capsys.readouterr().err
    (folder / "train.csv").write_text("image,question,answer\n")  # an empty split
    assert main(["eval", "--dataset", str(folder), "--split", "train", "--out", str(tmp_path), "--quiet"]) == 2
    assert "corresponds to no data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("question", "answer", "group"),
    [
        ("what is the red shape?", "circle", "what shape"),
        ("what color is the triangle?", "blue", "what color"),
        ("is there a red shape?", "yes", "color present"),
        ("is there a red shape?", "no", "color absent"),
        ("is there not a red shape in the image?", "no", "color present"),
        ("is no circle present?", "yes", "shape absent"),
        ("does the image not contain a circle?", "no", "shape present"),
        ("does the image contain a triangle?", "yes", "shape present"),
    ],
)
def test_breakdown_groups_read_negations(question, answer, group):
    from fastvision.evals.easyvqa_breakdown import question_group

    assert question_group(question, answer) == group


def test_breakdown_counts_every_question(capsys):
    from fastvision.evals.easyvqa_breakdown import main as breakdown_main

    assert breakdown_main(["--limit", "40"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].split()[0] == "all" and lines[-1].endswith("/40)")


def test_probe_reports_every_layer(capsys):
    from evals.experiments.easyvqa_probes.__main__ import main as probes_main

    assert probes_main(["probe", "--limit", "400"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "colour yes/no questions" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [f"layer {i}" for i in range(5)]  # embeddings + 4 layers
    for line in lines[1:]:
        scores = [float(word) for word in line.split() if word.replace(".", "").isdigit() and "." in word]
        assert len(scores) == 3 and all(0.0 <= score <= 1.0 for score in scores)


def test_easyvqa_text_check_names_the_image_in_words_and_trains(capsys) -> None:
    from transformers import AutoProcessor

    from evals.experiments.easyvqa_probes.__main__ import main as probes_main
    from evals.experiments.easyvqa_probes.text_check import encode, text_rows
    from fastvision.bundled import BUNDLED_MODEL

    tokenizer = AutoProcessor.from_pretrained(BUNDLED_MODEL).tokenizer
    rows = text_rows("test", tokenizer, limit=40)
    words = tokenizer.decode(rows[0][0]).split()
    assert words[0] in ("red", "green", "blue", "yellow", "black", "gray", "teal", "brown")
    assert words[1] in ("circle", "rectangle", "triangle")
    _, mask, labels = encode(rows[:3], tokenizer.pad_token_id, with_answer=True)
    lengths = mask.sum(1)
    assert [labels[i, lengths[i] - 1].item() for i in range(3)] == [row[1] for row in rows[:3]]
    assert (labels != -100).sum() == 3  # only the answers are learnt
    _, left_mask, _ = encode(rows[:3], tokenizer.pad_token_id, with_answer=False)
    assert left_mask[:, -1].all()  # left-padded: every prompt ends at the last position
    assert probes_main(["text-check", "--steps", "250", "--batch-size", "8", "--no-negations"]) == 0
    printed = capsys.readouterr().out
    assert "step 250" in printed and "what color" in printed
