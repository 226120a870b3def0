"""``fastvision train-bundled --task digits``: the seeded recipe behind the bundled digits LLaVA (2 CPU cores).

The easy-VQA model's vision side (``build.py``: a CLIP tower on 48x48 images with 4x4 patches, 144 image tokens)
with an 8-layer LLaMA, trained from scratch on the digit scenes' train split (``evals/digits_data``; its scans are
never in the test split), in two stages:

1. the vision tower alone learns, per image token, which digit covers its patch or that it is background (a dense
   11-way label read off the scene layout) and which of the 9 cells it lies in, through a temporary linear head.
   The tokens of a digit must agree on its class, so the tower learns to read a digit across its 4 patches, while
   background tokens carry no digit;
2. the projector and the language model learn to read the scene (the tower frozen): ``digits_reading.fit_reader``
   aligns the projected tokens with word targets read off the layout, teaches the lookup on those targets (reading
   first, then every question type, then the background tokens on a ramp), then moves to the real image tokens.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fastvision.bundled import BUNDLED_DIGITS_MODEL
from fastvision.bundled.digits_reading import HeldOut, ReadingSchedule, fit_reader
from fastvision.bundled.train import FitSettings, _progress, save_run, start_run

DIGITS_SETTINGS = FitSettings(steps=6200, vision_steps=1500, batch_size=32, learning_rate=3e-4)
DIGITS_SCHEDULE = ReadingSchedule()
DIGITS_TEXT_LAYERS = 8  # a 4-layer LM had read the whole image by layer 1, so pruning at K=2 cost nothing
BACKGROUND_WEIGHT = 0.2  # 116+ of 144 tokens are background: weigh them down so digits dominate the loss
VALIDATION_SCENES = 100  # train-split scenes after the training ones: new layouts, for the per-phase checks


def patch_vision_stage(scenes: list[Any], progress: bool = False) -> Any:
    """Stage 1 over ``scenes`` (indexed by scene id): per token, its digit-or-background class and its cell.

    The cell head (which of the 3x3 cells a token lies in, the same for every image) keeps the tokens' positions
    readable after the tower, which the location and reading questions need.
    """
    from fastvision.evals.digits_data import BACKGROUND_CLASS, CELL, GRID, PATCH, patch_labels

    def stage(
        model: Any, train: Any, pixels: torch.Tensor, image_index: dict[int, int], steps: int, generator: Any
    ) -> tuple[int, float]:
        rows = list(image_index.values())
        labels = torch.stack([torch.from_numpy(patch_labels(scenes[scene_id])) for scene_id in image_index])
        grid = torch.arange(GRID) * PATCH // CELL
        cells = (grid[:, None] * 3 + grid[None, :]).flatten()  # (144,) cell index of each token
        tower = model.model.vision_tower
        head = torch.nn.Linear(tower.config.hidden_size, BACKGROUND_CLASS + 1 + 9)
        weight = torch.ones(BACKGROUND_CLASS + 1)
        weight[BACKGROUND_CLASS] = BACKGROUND_WEIGHT
        optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.05)
        images = pixels[rows]
        loss = torch.tensor(float("nan"))
        bar = _progress(progress, steps)
        for step in range(steps):
            chosen = torch.randint(0, len(images), (64,), generator=generator)
            tokens = tower(pixel_values=images[chosen]).last_hidden_state[:, 1:]  # drop CLS, as the model does
            logits = head(tokens)
            digit = logits[..., : BACKGROUND_CLASS + 1].flatten(0, 1)
            loss = torch.nn.functional.cross_entropy(digit, labels[chosen].flatten(), weight=weight)
            where = logits[..., BACKGROUND_CLASS + 1 :].flatten(0, 1)
            loss = loss + torch.nn.functional.cross_entropy(where, cells.repeat(len(chosen)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar(step, loss.item())
        return len(rows), loss.item()

    return stage


def _held_out(processor: Any, validation: Any, scenes: list[Any]) -> HeldOut:
    """The validation questions encoded for ``held_out_accuracy``, with their scenes' token layouts."""
    from fastvision.bundled.train import _encode_split
    from fastvision.evals.digits_data import patch_labels

    pixels, prompts, answers, images, image_index = _encode_split(processor, validation)
    layouts = torch.stack([torch.from_numpy(patch_labels(scenes[image_id])) for image_id in image_index])
    return HeldOut(pixels, prompts, answers, images, layouts, list(validation["question_type"]))


def train_digits(
    out: Path = BUNDLED_DIGITS_MODEL,
    *,
    seed: int = DIGITS_SETTINGS.seed,
    steps: int = DIGITS_SETTINGS.steps,
    vision_steps: int = DIGITS_SETTINGS.vision_steps,
    batch_size: int = DIGITS_SETTINGS.batch_size,
    learning_rate: float = DIGITS_SETTINGS.learning_rate,
    schedule: ReadingSchedule = DIGITS_SCHEDULE,
    train_scenes: int | None = None,
    check_questions: int = 1000,
    check_every: int = 0,
    threads: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, save to ``out`` and return the run's record (also written to ``out/training.json``).

    The record holds the held-out checks of ``fit_reader`` on ``VALIDATION_SCENES`` train-split scenes that are not
    trained on, at each phase's end (and every ``check_every`` stage-2 steps, if set).
    """
    from fastvision.bundled.train import _encode_split
    from fastvision.evals.digits_data import (
        DEFAULT_SCENES,
        digits_vocabulary,
        load_digits_vqa,
        make_scenes,
        patch_labels,
    )
    from fastvision.evals.vqa import exact_match_accuracy

    schedule.check_fits(steps)  # before any work
    started, processor, model = start_run(digits_vocabulary(), seed, threads, text_layers=DIGITS_TEXT_LAYERS)
    scene_count = train_scenes or DEFAULT_SCENES["train"]
    settings = FitSettings(seed, steps, vision_steps, batch_size, learning_rate, progress)
    both = load_digits_vqa("train", scenes=scene_count + VALIDATION_SCENES)  # the first scenes are the same
    trained = [row for row, image_id in enumerate(both["image_id"]) if image_id < scene_count]
    train, validation = both.select(trained), both.select(range(len(trained), len(both)))
    scenes = make_scenes("train", scene_count + VALIDATION_SCENES)
    model.train()
    pixels, prompts, answers, images, image_index = _encode_split(processor, train)
    generator = torch.Generator().manual_seed(seed)
    vision_images, vision_loss = 0, float("nan")
    if vision_steps:
        vision_stage = patch_vision_stage(scenes, progress)
        vision_images, vision_loss = vision_stage(model, train, pixels, image_index, vision_steps, generator)
        if progress:
            print(f"stage 1 (vision tower, {vision_images} images): {vision_steps} steps, loss {vision_loss:.4f}")
    token_labels = torch.stack([torch.from_numpy(patch_labels(scenes[image_id])) for image_id in image_index])
    held_out = _held_out(processor, validation, scenes)
    stats = fit_reader(model, processor, (pixels, prompts, answers, images), token_labels, settings, schedule,
                       generator, list(train["question_type"]), held_out, check_every)  # fmt: skip
    train_seconds = time.perf_counter() - started
    accuracy = exact_match_accuracy(model, processor, load_digits_vqa("test", limit=check_questions))
    return save_run(
        model,
        processor,
        out,
        "fastvision train-bundled --task digits",
        settings,
        {"vision_images": vision_images, "vision_final_loss": vision_loss, "train_questions": len(prompts), **stats},
        train_seconds,
        threads,
        {f"test_accuracy_first_{check_questions}": accuracy, "held_out_checks": stats["held_out_checks"]},
        {
            "train_scenes": scene_count,
            "text_layers": DIGITS_TEXT_LAYERS,
            **asdict(schedule),
            "alignment_final_loss": stats["alignment_final_loss"],
            **{name: stats[name] for name in ("realignment_final_loss", "realigned_image_held_out") if name in stats},
        },
    )
