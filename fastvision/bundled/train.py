"""``fastvision train-bundled``: the seeded recipe that trains the bundled easy-VQA LLaVA on 2 CPU cores.

Every weight, the vision tower included, is trained from scratch on easy-VQA's train split (the package's own
split; the test split is never seen), in two stages:

1. the vision tower alone learns to classify each training image's shape and colour (labels read off the split's
   own "what shape/colour" answers), through a temporary linear head on its mean token. Without this stage the
   tower learned colours but stayed at chance on shapes (33%) within the same budget;
2. the projector and the language model learn to answer (the tower frozen), with next-token cross-entropy on the
   answer word and the end marker only.
 The result is saved with ``save_pretrained`` (safetensors, tokenizer, processor) so plain transformers
``from_pretrained`` loads it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastvision.bundled import BUNDLED_MODEL
from fastvision.bundled.build import PATCH_SIZE, build_model, build_processor, build_tokenizer


def _vocabulary() -> list[str]:
    from fastvision.evals.data import easyvqa_root

    root, words = easyvqa_root(), set()
    for split in ("train", "test"):  # words only: the questions' vocabulary, no labels or images
        for question, answer, _ in json.loads((root / split / "questions.json").read_text()):
            words.update(question.replace("?", " ").split())
            words.add(answer)
    return sorted(words)


SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "yellow", "black", "gray", "teal", "brown")


def _image_labels(dataset: Any) -> dict[int, tuple[int, int]]:
    """(shape, colour) class of every image whose questions include a shape and a colour answer."""
    shapes: dict[int, int] = {}
    colors: dict[int, int] = {}
    for answer, image_id in zip(dataset["answer"], dataset["image_id"], strict=True):
        if answer in SHAPES:
            shapes[image_id] = SHAPES.index(answer)
        elif answer in COLORS:
            colors[image_id] = COLORS.index(answer)
    return {image_id: (shapes[image_id], colors[image_id]) for image_id in shapes if image_id in colors}


def _pretrain_vision(
    model: Any, pixels: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int, generator: torch.Generator
) -> float:
    """Stage 1: shape + colour classification on the vision tower's mean token; returns the last loss."""
    tower = model.model.vision_tower
    width = tower.hidden_size if hasattr(tower, "hidden_size") else tower.config.hidden_size  # swapped or CLIP
    head = torch.nn.Linear(width, len(SHAPES) + len(COLORS))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.05)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        chosen = torch.randint(0, len(pixels), (batch_size,), generator=generator)
        batch = pixels[chosen]
        flip = torch.rand(batch_size, 1, 1, 1, generator=generator) < 0.5  # a mirrored shape is the same shape
        batch = torch.where(flip, batch.flip(-1), batch)
        logits = head(tower(pixel_values=batch).last_hidden_state.mean(dim=1))
        loss = torch.nn.functional.cross_entropy(logits[:, : len(SHAPES)], labels[chosen, 0])
        loss = loss + torch.nn.functional.cross_entropy(logits[:, len(SHAPES) :], labels[chosen, 1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def _encode_split(
    processor: Any, dataset: Any
) -> tuple[torch.Tensor, list[list[int]], list[int], list[int], dict[int, int]]:
    """Pixel tensors of every distinct image, and per question its prompt ids, answer id and image index."""
    from fastvision.evals.vqa import chat_prompt

    tokenizer = processor.tokenizer
    first_row: dict[int, int] = {}  # decode each distinct image once, not once per question
    for row, image_id in enumerate(dataset["image_id"]):
        first_row.setdefault(image_id, row)
    image_index = {image_id: index for index, image_id in enumerate(first_row)}
    distinct = dataset.select(list(first_row.values()))["image"]
    pixels = [
        processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0] for image in distinct
    ]
    texts = [chat_prompt(processor, question) for question in dataset["question"]]
    prompts = []
    for start in range(0, len(texts), 1024):  # the processor expands <image>; the pixels do not matter here
        chunk = texts[start : start + 1024]
        encoded = processor(text=chunk, images=[_placeholder_image()] * len(chunk), padding=False)
        prompts.extend(encoded["input_ids"])
    answers = [tokenizer.convert_tokens_to_ids(answer) for answer in dataset["answer"]]
    images = [image_index[image_id] for image_id in dataset["image_id"]]
    return torch.stack(pixels), prompts, answers, images, image_index


def _placeholder_image() -> Any:
    """A blank image: the processor needs one to expand ``<image>``, and the prompt ids do not depend on it."""
    from PIL import Image

    return Image.new("RGB", (8, 8))


def _collate(
    prompts: list[list[int]], answers: list[int], eos: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 everywhere but the answer and the end marker)."""
    width = max(len(prompt) for prompt in prompts) + 2
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    labels = torch.full((len(prompts), width), -100)
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        sequence = [*prompt, answer, eos]
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        labels[row, len(prompt) : len(sequence)] = torch.tensor([answer, eos])
    return ids, mask, labels


@dataclass
class FitSettings:
    """The two-stage recipe's knobs (stage 1: vision tower; stage 2: projector + language model)."""

    seed: int = 0
    steps: int = 3000
    vision_steps: int = 800
    batch_size: int = 48
    learning_rate: float = 2e-3
    progress: bool = True


def stage_two_optimizer(model: Any, settings: FitSettings) -> tuple[list[Any], Any, Any]:
    """AdamW over the parameters that require grad, with a 5% linear warm-up and a cosine decay over the steps."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.01)
    steps = settings.steps
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return trainable, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def take_step(loss: torch.Tensor, trainable: list[Any], optimizer: Any, scheduler: Any) -> float:
    """One stage-2 update from ``loss``: gradients clipped to norm 1, then the optimizer and schedule step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    scheduler.step()
    return loss.item()


def shuffled_batches(count: int, settings: FitSettings, generator: torch.Generator) -> Iterator[list[int]]:
    """``settings.steps`` batches of question indices: epochs of a seeded shuffle, each cut at its last full batch."""
    batch_size = settings.batch_size
    order = torch.randperm(count, generator=generator).tolist()
    for step in range(settings.steps):
        start = (step * batch_size) % len(order)
        if start + batch_size > len(order):
            order = torch.randperm(count, generator=generator).tolist()
            start = 0
        yield order[start : start + batch_size]


VisionStage = Callable[[Any, Any, torch.Tensor, dict[int, int], int, torch.Generator], tuple[int, float]]


def easyvqa_vision_stage(
    model: Any, train: Any, pixels: torch.Tensor, image_index: dict[int, int], steps: int, generator: torch.Generator
) -> tuple[int, float]:
    """Stage 1 for easy-VQA: shape + colour classes read off the split's own answers; (images used, last loss)."""
    labelled = _image_labels(train)
    if not labelled:
        return 0, float("nan")
    label_rows = [image_index[image_id] for image_id in labelled]
    labels = torch.tensor(list(labelled.values()))
    return len(labelled), _pretrain_vision(model, pixels[label_rows], labels, steps, 64, generator)


def fit_llava(
    model: Any, processor: Any, train: Any, settings: FitSettings, vision_stage: VisionStage = easyvqa_vision_stage
) -> dict[str, Any]:
    """Train ``model`` (any LLaVA whose tower returns ``last_hidden_state``) on the VQA rows ``train``.

    Used by ``train_bundled`` (easy-VQA), the digits recipe (``train_digits``, with its own ``vision_stage``) and the
    vision-tower comparison (``python -m evals.experiments.towers``), so every model is trained by the same stage 2.
    The caller seeds the global RNGs (before building the model, so the model's initialisation is seeded too);
    ``settings.seed`` seeds the data order. Returns the run's statistics.
    """
    tokenizer = processor.tokenizer
    model.train()
    pixels, prompts, answers, images, image_index = _encode_split(processor, train)
    generator = torch.Generator().manual_seed(settings.seed)
    vision_images, vision_loss = 0, float("nan")
    if settings.vision_steps:
        vision_images, vision_loss = vision_stage(model, train, pixels, image_index, settings.vision_steps, generator)
        if settings.progress:
            print(f"stage 1 (vision tower, {vision_images} images): {settings.vision_steps} steps, "
                  f"loss {vision_loss:.4f}")  # fmt: skip
    # Stage 2 keeps the tower frozen: at this learning rate it otherwise forgets shapes before the LM learns to read
    # them (measured: shape answers stayed at chance, 30%, with the tower trainable).
    model.model.vision_tower.requires_grad_(False)
    trainable, optimizer, scheduler = stage_two_optimizer(model, settings)
    losses: list[float] = []
    bar = _progress(settings.progress, settings.steps)
    for step, chosen in enumerate(shuffled_batches(len(prompts), settings, generator)):
        ids, mask, labels = _collate([prompts[i] for i in chosen], [answers[i] for i in chosen],
                                     tokenizer.eos_token_id, tokenizer.pad_token_id)  # fmt: skip
        loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels[[images[i] for i in chosen]],
                     labels=labels).loss  # fmt: skip
        losses.append(take_step(loss, trainable, optimizer, scheduler))
        bar(step, losses[-1])
    model.model.vision_tower.requires_grad_(True)
    model.eval()
    return {
        "vision_images": vision_images,
        "vision_final_loss": vision_loss,
        "train_questions": len(prompts),
        "final_loss_mean_last_50": sum(losses[-50:]) / len(losses[-50:]),
    }


def train_bundled(
    out: Path = BUNDLED_MODEL,
    *,
    seed: int = FitSettings.seed,
    steps: int = FitSettings.steps,
    vision_steps: int = FitSettings.vision_steps,
    batch_size: int = FitSettings.batch_size,
    learning_rate: float = FitSettings.learning_rate,
    train_limit: int | None = None,
    check_questions: int = 500,
    threads: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, save to ``out`` and return the run's record (also written to ``out/training.json``)."""
    from fastvision.evals.data import load_easyvqa
    from fastvision.evals.vqa import exact_match_accuracy

    started, processor, model = start_run(_vocabulary(), seed, threads)
    settings = FitSettings(seed, steps, vision_steps, batch_size, learning_rate, progress)
    stats = fit_llava(model, processor, load_easyvqa("train", limit=train_limit), settings)
    train_seconds = time.perf_counter() - started
    check = load_easyvqa("test", limit=check_questions)
    accuracy = exact_match_accuracy(model, processor, check)
    return save_run(model, processor, out, "fastvision train-bundled", settings, stats, train_seconds, threads,
                    {f"test_accuracy_first_{check_questions}": accuracy})  # fmt: skip


def start_run(
    vocabulary: list[str], seed: int, threads: int, patch_size: int = PATCH_SIZE, text_layers: int = 4
) -> tuple[float, Any, Any]:
    """Seed the global RNGs, then build the bundled architecture for ``vocabulary``: (start time, processor, model).

    Seeding comes first so that the model's initialisation is seeded too.
    """
    torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    tokenizer = build_tokenizer(vocabulary)
    processor = build_processor(tokenizer, patch_size=patch_size)
    return started, processor, build_model(tokenizer, seed=seed, patch_size=patch_size, text_layers=text_layers)


def save_run(
    model: Any, processor: Any, out: Path, recipe: str, settings: FitSettings, stats: dict[str, Any],
    train_seconds: float, threads: int, checks: dict[str, Any], extra: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Save a trained bundled model with its processor and write the run's record, ``out/training.json``.

    The record names the seeded ``recipe`` command, its settings, the statistics ``fit_llava`` returned, the time on
    ``threads`` CPU threads, ``extra`` recipe fields and the held-out ``checks``; the record is returned.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record = {
        "recipe": recipe,
        "seed": settings.seed,
        "steps": settings.steps,
        "vision_steps": settings.vision_steps,
        "vision_images": stats["vision_images"],
        "vision_final_loss": stats["vision_final_loss"],
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        **(extra or {}),
        "train_questions": stats["train_questions"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss_mean_last_50": stats["final_loss_mean_last_50"],
        "train_seconds": round(train_seconds, 1),
        "threads": threads,
        "torch": torch.__version__,
        **checks,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _progress(enabled: bool, total: int) -> Any:
    """A rich progress bar on a terminal; a line every 100 steps otherwise (logs, CI)."""
    import sys

    if not enabled:
        return lambda step, loss: None
    if not sys.stdout.isatty():

        def log(step: int, loss: float) -> None:
            if (step + 1) % 100 == 0 or step + 1 == total:
                print(f"step {step + 1}/{total} loss {loss:.4f}", flush=True)

        return log
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    task = progress.add_task("train", total=total, loss=float("nan"))
    progress.start()

    def update(step: int, loss: float) -> None:
        progress.update(task, completed=step + 1, loss=loss)
        if step + 1 == total:
            progress.stop()

    return update
