"""The digits task: its data, its bundled model's accuracy and pruning gap, ``eval --task`` and ``heatmaps``."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

import fastvision
from fastvision.bundled import BUNDLED_DIGITS_MODEL, BUNDLED_MODEL
from fastvision.bundled.train_digits import DIGITS_SCHEDULE, DIGITS_SETTINGS, DIGITS_TEXT_LAYERS
from fastvision.cli.main import main
from fastvision.evals.digits_data import (
    BACKGROUND_CLASS,
    CELL,
    COLUMNS,
    DIGIT,
    MAX_DIGITS,
    MIN_DIGITS,
    QUESTION_TYPES,
    ROWS,
    load_digits_vqa,
    make_scenes,
    patch_labels,
    render,
    source_indices,
)
from fastvision.evals.results import EvalResults

SUBSET = 200  # the fixed test subset the accuracy tests hold


def test_split_is_by_source_scan():
    train, test = source_indices("train"), source_indices("test")
    assert len(train) + len(test) == 1797 and not set(train) & set(test)
    assert {digit.source for scene in make_scenes("test", 300) for digit in scene.digits} <= set(test.tolist())
    assert {digit.source for scene in make_scenes("train", 300) for digit in scene.digits} <= set(train.tolist())
    with pytest.raises(ValueError, match="Unknown digits split 'val'"):
        source_indices("val")


def test_scenes_are_sparse_deterministic_and_match_their_answers():
    assert {len(scene.digits) for scene in make_scenes("test", 200)} == set(range(2, 8))  # 2 to 7 digits a scene
    scenes = make_scenes("test", 50)
    assert scenes == make_scenes("test", 50) and scenes[:10] == make_scenes("test", 10)
    data = load_digits_vqa("test", limit=200)
    assert len(data) == 200 and data["question_type"][:4] == list(QUESTION_TYPES)
    for scene in scenes:
        labels = [digit.label for digit in scene.digits]
        assert MIN_DIGITS <= len(labels) <= MAX_DIGITS and len(set(labels)) == len(labels)
        assert len({(digit.row, digit.column) for digit in scene.digits}) == len(labels)
        layout = patch_labels(scene)
        assert (layout != BACKGROUND_CLASS).sum() == 4 * len(labels)  # 4 of 144 tokens per digit
        image = np.asarray(render(scene).convert("L"))
        for digit in scene.digits:
            assert 0 <= digit.dy <= CELL - DIGIT and 0 <= digit.dx <= CELL - DIGIT
            assert image[digit.top : digit.top + DIGIT, digit.left : digit.left + DIGIT].min() < 120  # ink is there
    for row in data.select(range(40)):
        scene = scenes[row["image_id"]]
        where = {(ROWS[d.row], COLUMNS[d.column]): str(d.label) for d in scene.digits}
        words = row["question"].split()
        if row["question_type"] == "reading":
            assert where[(words[-3], words[-2])] == row["answer"]
        elif row["question_type"] == "location":
            digit = next(d for d in scene.digits if str(d.label) == words[4])
            assert row["answer"] == (ROWS[digit.row] if words[1] == "row" else COLUMNS[digit.column])
        elif row["question_type"] == "counting":
            assert row["answer"] == str(len(scene.digits))
        else:
            assert row["answer"] == ("yes" if words[3] in where.values() else "no")


def test_loader_refuses_bad_limits():
    with pytest.raises(ValueError, match="limit must be a positive"):
        load_digits_vqa("test", limit=0)
    with pytest.raises(ValueError, match="count must be a positive number of scenes"):
        make_scenes("test", 0)


@pytest.fixture(scope="module")
def bundled():
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(BUNDLED_DIGITS_MODEL).eval()
    return model, AutoProcessor.from_pretrained(BUNDLED_DIGITS_MODEL)


@torch.no_grad()
def test_bundled_digits_model_holds_its_accuracy_and_pruning_gap(bundled):
    """The task's targets on the fixed subset: the shipped checkpoint answers at least 0.85 unpatched, and random
    pruning at K=2, R=0.9 costs it at least 0.15.

    As measured on these 200 questions: 0.965 unpatched (counting 1.0, location 0.96, presence 0.98, reading 0.92),
    random pruning 0.740 (a gap of 0.225), FastV at the same budget 0.770. On all 2,000 test questions: 0.960, 0.772
    and 0.813 (docs/tasks.md, "The digits task"). The accuracy and per-type floors hold what the checkpoint does, a
    little below the measurement (a question or two of slack per type for other torch builds), so that a regression
    shows.
    """
    from fastvision.evals.vqa import exact_match_accuracy

    model, processor = bundled
    subset = load_digits_vqa("test", limit=SUBSET)
    unpatched = exact_match_accuracy(model, processor, subset)
    assert unpatched >= 0.94  # the task's target is 0.85
    for kind, measured in (("counting", 1.0), ("location", 0.96), ("presence", 0.98), ("reading", 0.92)):
        questions = subset.filter(lambda row, kind=kind: row["question_type"] == kind)
        assert exact_match_accuracy(model, processor, questions) >= measured - 0.04, kind
    with fastvision.patched(model, k=2, ratio=0.9, scoring="random"):
        random_pruned = exact_match_accuracy(model, processor, subset)
    assert random_pruned <= unpatched - 0.15  # the task's target: a blind choice of 15 tokens loses answers
    with fastvision.patched(model, k=2, ratio=0.9):  # the attention ranking keeps more of what the answers need
        assert exact_match_accuracy(model, processor, subset) >= random_pruned + 0.02


def test_bundled_digits_checkpoint_is_small_and_records_its_recipe():
    size = sum(path.stat().st_size for path in BUNDLED_DIGITS_MODEL.iterdir())
    assert size <= 25 * 2**20
    record = json.loads((BUNDLED_DIGITS_MODEL / "training.json").read_text())
    assert record["recipe"] == "fastvision train-bundled --task digits" and record["threads"] == 2
    # the shipped checkpoint came from the recipe's current defaults
    assert record["text_layers"] == DIGITS_TEXT_LAYERS
    schedule = json.loads(json.dumps(asdict(DIGITS_SCHEDULE)))  # tuples as the record's lists
    assert {name: record[name] for name in schedule} == schedule
    recipe = (DIGITS_SETTINGS.steps, DIGITS_SETTINGS.vision_steps, DIGITS_SETTINGS.batch_size,
              DIGITS_SETTINGS.learning_rate)  # fmt: skip
    assert (record["steps"], record["vision_steps"], record["batch_size"], record["learning_rate"]) == recipe


def test_reading_schedule_learns_the_lookup_before_the_haystack():
    from fastvision.bundled.digits_reading import ReadingSchedule

    schedule = ReadingSchedule(focus=(("reading", 3), ("location", 2)), clean_steps=5, ramp_steps=4, settle_steps=2)
    phases = [schedule.phase(step) for step in (0, 2, 3, 4, 5, 9, 10, 13, 14, 15, 16, 99)]
    assert phases == ["2a reading"] * 2 + ["2a location"] * 2 + ["2b"] * 2 + ["2c"] * 2 + ["2d"] * 2 + ["3"] * 2
    shares = [schedule.background_share(step) for step in (0, 9, 10, 11, 13, 14, 20)]
    assert shares == [0, 0, 0.25, 0.5, 1, 1, 1]
    assert schedule.word_steps == 16


def test_focused_batches_draw_one_question_type_at_a_time():
    from fastvision.bundled.digits_reading import ReadingSchedule, _focused_batches
    from fastvision.bundled.train import FitSettings

    types = ["reading", "location", "counting", "presence"] * 10
    schedule = ReadingSchedule(focus=(("reading", 2), ("presence", 3)), clean_steps=4, ramp_steps=0, settle_steps=0)
    settings = FitSettings(steps=schedule.word_steps, batch_size=4)
    batches = list(_focused_batches(types, settings, schedule, torch.Generator().manual_seed(0)))
    assert len(batches) == 9 and all(len(batch) == 4 for batch in batches)
    assert [{types[row] for row in batch} for batch in batches[:5]] == [{"reading"}] * 2 + [{"presence"}] * 3
    assert len({types[row] for batch in batches[5:] for row in batch}) > 1
    with pytest.raises(ValueError, match="Unknown question type 'colour' in the reading schedule; allowed: reading"):
        list(_focused_batches(types, settings, ReadingSchedule(focus=(("colour", 1),)), torch.Generator()))


def test_reading_schedule_longer_than_stage_two_is_refused(tmp_path):
    from fastvision.bundled.digits_reading import ReadingSchedule
    from fastvision.bundled.train_digits import train_digits

    with pytest.raises(ValueError, match="3 word-target steps leave none of the 2 stage-2 steps for phase 3"):
        train_digits(tmp_path, steps=2, vision_steps=0, batch_size=4, train_scenes=4, check_questions=4,
                     schedule=ReadingSchedule(align_steps=0, focus=(), clean_steps=1, ramp_steps=1, settle_steps=1),
                     progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="3 word-target steps leave none of the 3 stage-2 steps"):  # no image phase
        ReadingSchedule(focus=(), clean_steps=1, ramp_steps=1, settle_steps=1).check_fits(3)
    with pytest.raises(ValueError, match=r"lengths must be >= 0 steps, got \{'realign_steps': -1, 'focus reading': -2"):
        ReadingSchedule(realign_steps=-1, focus=(("reading", -2),))


def test_digits_recipe_smoke(tmp_path, monkeypatch):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from fastvision.bundled import digits_reading
    from fastvision.bundled.digits_reading import ReadingSchedule
    from fastvision.bundled.train_digits import train_digits
    from fastvision.evals.vqa import exact_match_accuracy

    # 5 stage-2 steps: 1 on reading alone and 1 on every type (digit word targets), 1 with the background's, then the
    # projector aligned again and 2 steps on the real image tokens
    schedule = ReadingSchedule(align_steps=2, focus=(("reading", 1),), clean_steps=1, ramp_steps=1, settle_steps=0,
                               realign_steps=2)  # fmt: skip
    alignments = []  # the steps of every projector alignment: phase 1, then the start of phase 3, once each
    align = digits_reading.align_projector
    monkeypatch.setattr(digits_reading, "align_projector",
                        lambda *args: alignments.append(args[-2]) or align(*args))  # fmt: skip
    record = train_digits(tmp_path, steps=5, vision_steps=3, batch_size=8, train_scenes=16, check_questions=8,
                          schedule=schedule, progress=False)  # fmt: skip
    assert alignments == [2, 2]
    assert record["train_scenes"] == 16 and record["train_questions"] == 64 and record["vision_images"] == 16
    assert record["text_layers"] == 8 and record["align_steps"] == 2 and record["clean_steps"] == 1
    for name in ("vision_final_loss", "alignment_final_loss", "realignment_final_loss", "final_loss_mean_last_50"):
        assert torch.isfinite(torch.tensor(record[name])), name
    assert record["realign_steps"] == 2 and 0 <= record["realigned_image_held_out"]["all"] <= 1
    checks = record["held_out_checks"]  # at each phase's end, on every kind of input, per question type
    phases = {step: check["phase"] for step, check in checks.items()}
    assert phases == {"1": "2a reading", "2": "2b", "3": "2c", "5": "3"}
    for check in checks.values():
        for inputs in ("digit words", "words", "image"):
            assert sorted(check[inputs]) == sorted([*QUESTION_TYPES, "all"]) and 0 <= check[inputs]["all"] <= 1
    saved = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert saved.config.text_config.num_hidden_layers == 8
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert record["test_accuracy_first_8"] == exact_match_accuracy(saved, processor, load_digits_vqa("test", limit=8))


def test_eval_task_digits_reports_every_method_by_question_type(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["eval", "--task", "digits", "--limit", "8", "--k", "2", "--ratio", "0", "0.75", "--stride", "--pool"]
    assert main([*args, "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    results = EvalResults.from_json(out / "results.json")
    assert results.dataset == {"name": "digits", "split": "test", "questions": 8}
    names = [row.name for row in results.settings]
    assert names == ["unpatched", "fastv K=2 R=0", "fastv K=2 R=0.75", "random K=2 R=0.75", "stride K=2 R=0.75",
                     "pool K=2 R=0.75"]  # fmt: skip
    for row in results.settings:
        assert sorted(row.by_type) == sorted(QUESTION_TYPES)
        assert sum(total for _, total in row.by_type.values()) == 8
        assert sum(correct for correct, _ in row.by_type.values()) == row.correct
    assert {row.kept_image_tokens for row in results.settings[2:]} == {36.0}
    assert (out / "by_type.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy by question type" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "digits", "--split", "val"], "Unknown digits split 'val'"),
        (["--task", "digits", "--model", str(BUNDLED_MODEL)], "cannot answer this task"),
        (["--task", "digits", "--dataset", "x"], "Pass --task or --dataset, not both"),
    ],
)
def test_eval_task_bad_input_fails_before_work(args, message, tmp_path, capsys):
    assert main(["eval", *args, "--limit", "8", "--out", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_eval_unknown_task_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--task", "chartqa"])
    assert "invalid choice: 'chartqa'" in capsys.readouterr().err


def test_eval_task_without_its_model_says_how_to_train_it(tmp_path, capsys, monkeypatch):
    from dataclasses import replace

    from fastvision.evals import bundled_tasks

    monkeypatch.setitem(bundled_tasks.TASKS, "digits", replace(bundled_tasks.TASKS["digits"], model=tmp_path / "no"))
    assert main(["eval", "--task", "digits", "--limit", "4", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "run `fastvision train-bundled --task digits`" in capsys.readouterr().err


def test_heatmaps_draw_every_method_and_measure_digit_coverage(tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["heatmaps", "--images", "2", "--coverage", "8", "--ratio", "0.75", "--out", str(out)]) == 0
    assert (out / "heatmaps.png").read_bytes()[:4] == b"\x89PNG"
    coverage = json.loads((out / "coverage.json").read_text())["coverage"]
    assert set(coverage) == {"fastv", "dart", "divprune", "visionzip", "random", "stride", "pool", "chance"}
    for method in ("fastv", "dart", "divprune", "visionzip", "random", "stride", "pool"):
        assert 0.0 <= coverage[method]["precision"] <= 1.0 and 0.0 <= coverage[method]["recall"] <= 1.0
    assert "of kept tokens on a digit" in capsys.readouterr().out
    assert main(["heatmaps", "--methods", "fastv,best", "--out", str(out)]) == 2
    assert "unknown ['best']" in capsys.readouterr().err


def test_heatmap_rows_are_distinct_images_with_varied_questions():
    from fastvision.evals.heatmaps import spread_rows

    rows = spread_rows(load_digits_vqa("test", limit=32), 4)
    assert len(set(rows["image_id"])) == 4 and rows["question_type"] == list(QUESTION_TYPES)
