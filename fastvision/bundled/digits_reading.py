"""Stage 2 of the digits recipe: teach the language model to *read* the scene, then hand it the real image tokens.

Fitting the projector and the language model end to end on the answers alone (``fit_llava``, the easy-VQA stage 2)
taught the bundled model to count but left reading, location and presence at chance within a 2-core budget: an
answer word is one bit of supervision about a content-based lookup over 144 tokens. This stage gives that lookup a
vocabulary. Every image token gets a *word target* in the language model's own embedding space, read off the scene
layout: for a token a digit covers, the sum of the embeddings of the digit's word, its row word and its column word
(``"7" + "top" + "left"``); for a background token, the ``<unk>`` embedding. A question word then matches the image
tokens that carry it, which is what attention does well. The phases, all with the tower frozen:

1. **alignment**: the projector alone regresses its outputs onto the word targets (the feature-alignment stage of
   LLaVA, Liu et al. 2023, arXiv 2304.08485, with the targets read off the layout instead of a caption);
2. **reading on words**, the word targets in place of the image tokens, as a curriculum (Bengio et al. 2009):
   a. one question type at a time (reading), on the digit tokens only, until its lookup is learnt.
      With all 144 tokens from the start the lookup is never found (at initialisation about one token in 144 gets
      the gradient, and a fresh LM stays at chance), nor, within 1500 steps, with the four types mixed from the
      start;
   b. every question type, still on the digit tokens only;
   c. the background tokens added back at a share ramping linearly from 0 to 1, so the lookup survives the haystack;
   d. a few steps with every token;
3. **reading the image**: the projector first aligned again (phase 2 moved the embeddings the targets are made of),
   then the real projected tokens, with the alignment regression kept as an auxiliary loss.

``held_out_accuracy`` scores a held-out set per question type on each kind of input (digit words only, all words,
the image), so the record shows at the end of every phase whether the lookup was learnt and whether it carried over.
Every phase trains through the stock ``LlavaForConditionalGeneration`` forward (``inputs_embeds``), so the saved
model is a plain transformers checkpoint.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from fastvision.bundled.train import (
    FitSettings,
    _collate,
    _progress,
    shuffled_batches,
    stage_two_optimizer,
    take_step,
)

TARGET_SCALE = 4e-4  # the variance of an initialised embedding (std 0.02): keeps the regression loss near 1
INPUTS = ("digit words", "words", "image")  # what stands in the image tokens' places (held_out_accuracy)


@dataclass(frozen=True)
class ReadingSchedule:
    """The digits stage 2's phase lengths (in stage-2 steps) and weights; phase 3 takes the steps that remain."""

    align_steps: int = 300  # phase 1, projector only, batch 64
    # phase 2a: one question type at a time, for this many steps each, on the digit word targets (no background)
    focus: tuple[tuple[str, int], ...] = (("reading", 500),)
    clean_steps: int = 2500  # phase 2b: every question type, digit word targets
    ramp_steps: int = 1500  # phase 2c: background word targets join, their share ramping from 0 to 1
    settle_steps: int = 200  # phase 2d: word targets for every token
    # phase 3 starts by aligning the projector again (projector only, batch 64, its own AdamW at 1e-3 as in phase 1),
    # to the word targets as the language model's embeddings stand after phase 2: they moved while it trained, so
    # phase 1's alignment is out of date
    realign_steps: int = 300
    feature_weight: float = 5.0  # phase 3: weight of the alignment regression beside the answer loss

    def __post_init__(self) -> None:
        lengths = {"align_steps": self.align_steps, "clean_steps": self.clean_steps, "ramp_steps": self.ramp_steps,
                   "settle_steps": self.settle_steps, "realign_steps": self.realign_steps,
                   **{f"focus {kind}": length for kind, length in self.focus}}  # fmt: skip
        negative = {name: length for name, length in lengths.items() if length < 0}
        if negative:
            raise ValueError(f"Reading schedule lengths must be >= 0 steps, got {negative}.")

    def _ends(self) -> list[tuple[str, int]]:
        names = [*(f"2a {kind}" for kind, _ in self.focus), "2b", "2c", "2d"]
        lengths = [*(length for _, length in self.focus), self.clean_steps, self.ramp_steps, self.settle_steps]
        return list(zip(names, itertools.accumulate(lengths), strict=True))

    @property
    def focus_steps(self) -> int:
        return sum(length for _, length in self.focus)

    @property
    def word_steps(self) -> int:
        return self._ends()[-1][1]

    def background_share(self, step: int) -> float:
        """The share of background tokens kept at stage-2 ``step``: 0 in phases 2a-2b, ramping to 1 over 2c."""
        clean = self.focus_steps + self.clean_steps
        if step < clean:
            return 0.0
        return min(1.0, (step - clean + 1) / max(1, self.ramp_steps))

    def check_fits(self, steps: int) -> None:
        """Refuse a schedule whose word-target phases leave none of ``steps`` stage-2 steps for phase 3 (the image)."""
        if self.word_steps >= steps:
            raise ValueError(f"The reading schedule's {self.word_steps} word-target steps leave none of the {steps} "
                             "stage-2 steps for phase 3, the real image tokens; allowed: fewer word-target steps "
                             "than stage-2 steps (raise --steps).")  # fmt: skip

    def phase(self, step: int) -> str:
        return next((name for name, end in self._ends() if step < end), "3")


@dataclass
class HeldOut:
    """Questions held out of training, with what ``held_out_accuracy`` needs to feed any kind of input."""

    pixels: torch.Tensor  # (images, 3, H, W)
    prompts: list[list[int]]
    answers: list[int]
    images: list[int]  # each question's row in ``pixels`` and ``token_labels``
    token_labels: torch.Tensor  # (images, 144) layout classes (``patch_labels``)
    types: list[str]


def word_targets(model: Any, tokenizer: Any, token_labels: torch.Tensor) -> torch.Tensor:
    """(images, 144, hidden) targets for the image tokens whose layout classes are ``token_labels`` (images, 144).

    ``token_labels`` holds a digit class (0-9) or ``BACKGROUND_CLASS`` per token, row-major on the 12x12 grid.
    """
    from fastvision.evals.digits_data import BACKGROUND_CLASS, CELL, COLUMNS, GRID, PATCH, ROWS

    words = torch.tensor([tokenizer.convert_tokens_to_ids(str(digit)) for digit in range(10)])
    cell = torch.arange(GRID) * PATCH // CELL  # each grid row's (and column's) cell index
    row_words = torch.tensor([tokenizer.convert_tokens_to_ids(word) for word in ROWS])[cell]
    column_words = torch.tensor([tokenizer.convert_tokens_to_ids(word) for word in COLUMNS])[cell]
    embed = model.get_input_embeddings()
    digit = token_labels != BACKGROUND_CLASS
    ids = torch.where(digit, words[token_labels.clamp(max=9)], tokenizer.unk_token_id)
    where = embed(row_words)[:, None, :] + embed(column_words)[None, :, :]  # (12, 12, hidden)
    return embed(ids) + digit[..., None] * where.flatten(0, 1)[None]


def _image_tokens(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The projected image tokens, (images, 144, hidden), through the model's own ``get_image_features``."""
    features = model.model.get_image_features(pixel_values=pixels)
    features = getattr(features, "pooler_output", features)
    return torch.stack(list(features)) if isinstance(features, list | tuple) else features


def _alignment_loss(tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(tokens, targets.detach()) / TARGET_SCALE


def align_projector(
    model: Any, tokenizer: Any, pixels: torch.Tensor, labels: torch.Tensor, steps: int, generator: torch.Generator
) -> float:
    """Phases 1 and 3 (its start): the projector alone regresses onto the word targets; returns the last loss."""
    optimizer = torch.optim.AdamW(model.model.multi_modal_projector.parameters(), lr=1e-3)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        chosen = torch.randint(0, len(pixels), (64,), generator=generator)
        loss = _alignment_loss(_image_tokens(model, pixels[chosen]), word_targets(model, tokenizer, labels[chosen]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def _drop_background(
    embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row with only its ``keep`` positions, packed to the left and right-padded again."""
    lengths = keep.sum(dim=1)
    width = int(lengths.max())
    packed = embeds.new_zeros(len(embeds), width, embeds.shape[-1])
    packed_mask = torch.zeros(len(embeds), width, dtype=mask.dtype)
    packed_labels = torch.full((len(embeds), width), -100, dtype=labels.dtype)
    for row in range(len(embeds)):
        length = int(lengths[row])
        packed[row, :length] = embeds[row][keep[row]]
        packed_mask[row, :length] = 1
        packed_labels[row, :length] = labels[row][keep[row]]
    return packed, packed_mask, packed_labels


def _batch(
    model: Any, tokenizer: Any, questions: tuple[list[list[int]], list[int]], pixels: torch.Tensor,
    token_labels: torch.Tensor, inputs: str, share: float, generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One batch's (embeds, mask, labels, image tokens, word targets) for ``inputs`` (one of ``INPUTS``).

    ``pixels`` and ``token_labels`` are the batch's images, one per question; a share ``share`` of the background
    tokens is kept (each independently), the digit tokens always.
    """
    from fastvision.evals.digits_data import BACKGROUND_CLASS

    ids, mask, labels = _collate(*questions, tokenizer.eos_token_id, tokenizer.pad_token_id)
    targets = word_targets(model, tokenizer, token_labels)
    tokens = _image_tokens(model, pixels) if inputs == "image" else targets
    embeds = model.get_input_embeddings()(ids).clone()
    is_image = ids == model.config.image_token_id
    embeds[is_image] = tokens.reshape(-1, tokens.shape[-1]).to(embeds.dtype)
    if share < 1.0:
        kept = token_labels != BACKGROUND_CLASS
        if share > 0.0:
            kept |= torch.rand(token_labels.shape, generator=generator) < share
        keep = ~is_image
        keep[is_image] = kept.flatten()
        embeds, mask, labels = _drop_background(embeds, mask, labels, keep & mask.bool())
    return embeds, mask, labels, tokens, targets


def _focused_batches(
    question_types: list[str], settings: FitSettings, schedule: ReadingSchedule, generator: torch.Generator
) -> Iterator[list[int]]:
    """Phase 2a's batches from one question type at a time (``schedule.focus``), then batches of every type."""
    from fastvision.evals.digits_data import QUESTION_TYPES

    for kind, length in schedule.focus:
        if kind not in QUESTION_TYPES:
            raise ValueError(f"Unknown question type {kind!r} in the reading schedule; allowed: "
                             f"{', '.join(QUESTION_TYPES)}.")  # fmt: skip
        rows = [row for row, asked in enumerate(question_types) if asked == kind]
        for chosen in shuffled_batches(len(rows), replace(settings, steps=length), generator):
            yield [rows[i] for i in chosen]
    yield from shuffled_batches(len(question_types), replace(settings, steps=settings.steps - schedule.focus_steps),
                                generator)  # fmt: skip


@torch.no_grad()
def held_out_accuracy(model: Any, tokenizer: Any, held_out: HeldOut, inputs: str) -> dict[str, float]:
    """Per question type (and ``"all"``), the share of ``held_out`` answered right with ``inputs`` in the image
    tokens' places: ``"digit words"`` (word targets of the digit tokens only), ``"words"`` (every token's word
    target) or ``"image"`` (the real projected tokens). The answer is the argmax at the position before it.
    """
    if inputs not in INPUTS:
        raise ValueError(f"Unknown inputs {inputs!r}; allowed: {', '.join(INPUTS)}.")
    was_training = model.training
    model.eval()
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for start in range(0, len(held_out.prompts), 64):
        span = slice(start, start + 64)
        rows = held_out.images[span]
        questions = (held_out.prompts[span], held_out.answers[span])
        share = 0.0 if inputs == "digit words" else 1.0
        embeds, mask, labels, _, _ = _batch(model, tokenizer, questions, held_out.pixels[rows],
                                            held_out.token_labels[rows], inputs, share, None)  # fmt: skip
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        where = (labels != -100).int().argmax(dim=1)  # each row's answer position
        predicted = logits[torch.arange(len(labels)), where - 1].argmax(dim=-1)
        for kind, hit in zip(held_out.types[span], (predicted == labels[torch.arange(len(labels)), where]).tolist(),
                             strict=True):  # fmt: skip
            for name in (kind, "all"):
                right[name][0] += int(hit)
                right[name][1] += 1
    model.train(was_training)
    return {name: round(hits / total, 4) for name, (hits, total) in sorted(right.items())}


def fit_reader(
    model: Any,
    processor: Any,
    encoded: tuple[torch.Tensor, list[list[int]], list[int], list[int]],
    token_labels: torch.Tensor,
    settings: FitSettings,
    schedule: ReadingSchedule,
    generator: torch.Generator,
    question_types: list[str],
    held_out: HeldOut | None = None,
    check_every: int = 0,
) -> dict[str, Any]:
    """Phases 1-3 on the encoded training questions ``(pixels, prompts, answers, image rows)``; returns statistics.

    ``token_labels`` (images, 144) is every training image's token layout (``patch_labels``), in pixel order, and
    ``question_types`` every question's type (phase 2a draws one type at a time). With
    ``held_out``, the statistics hold ``held_out_accuracy`` on every kind of input at the end of each phase (and
    every ``check_every`` steps, if set), keyed by the step count.
    """
    schedule.check_fits(settings.steps)
    tokenizer = processor.tokenizer
    pixels, prompts, answers, images = encoded
    model.model.vision_tower.requires_grad_(False)
    align_loss = align_projector(model, tokenizer, pixels, token_labels, schedule.align_steps, generator)
    if settings.progress:
        print(f"stage 2, phase 1 (projector alignment): {schedule.align_steps} steps, loss {align_loss:.4f}")
    trainable, optimizer, scheduler = stage_two_optimizer(model, settings)
    steps = settings.steps
    checks: dict[str, Any] = {}
    losses: list[float] = []
    statistics: dict[str, Any] = {"alignment_final_loss": align_loss}
    bar = _progress(settings.progress, steps)
    model.train()
    batches = _focused_batches(question_types, settings, schedule, generator)
    for step, chosen in enumerate(batches):
        phase = schedule.phase(step)
        if step == schedule.word_steps and schedule.realign_steps:  # the first step of phase 3
            realign_loss = align_projector(model, tokenizer, pixels, token_labels, schedule.realign_steps, generator)
            statistics["realignment_final_loss"] = realign_loss
            if held_out is not None:  # what the re-alignment alone did for the image, before phase 3 trains on it
                statistics["realigned_image_held_out"] = held_out_accuracy(model, tokenizer, held_out, "image")
            if settings.progress:
                print(f"phase 3: projector aligned again, {schedule.realign_steps} steps, loss {realign_loss:.4f}; "
                      f"held out on the image {statistics.get('realigned_image_held_out')}", flush=True)  # fmt: skip
        rows = [images[i] for i in chosen]
        questions = ([prompts[i] for i in chosen], [answers[i] for i in chosen])
        inputs = "image" if phase == "3" else "words"
        embeds, mask, labels, tokens, targets = _batch(model, tokenizer, questions, pixels[rows], token_labels[rows],
                                                       inputs, schedule.background_share(step), generator)  # fmt: skip
        loss = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        if phase == "3":
            loss = loss + schedule.feature_weight * _alignment_loss(tokens, targets)
        losses.append(take_step(loss, trainable, optimizer, scheduler))
        bar(step, losses[-1])
        phase_ends = step + 1 == steps or schedule.phase(step + 1) != phase
        if held_out is not None and (phase_ends or (check_every and (step + 1) % check_every == 0)):
            checks[str(step + 1)] = {"phase": phase, **{name: held_out_accuracy(model, tokenizer, held_out, name)
                                                        for name in INPUTS}}  # fmt: skip
            if settings.progress:
                print(f"held out after step {step + 1} (phase {phase}): "
                      + "; ".join(f"{name} {checks[str(step + 1)][name]}" for name in INPUTS), flush=True)  # fmt: skip
    model.model.vision_tower.requires_grad_(True)
    model.eval()
    statistics["final_loss_mean_last_50"] = sum(losses[-50:]) / len(losses[-50:])
    return {**statistics, "held_out_checks": checks} if held_out is not None else statistics
