"""Stage 2 of the digits recipe: teach the language model to *read* the scene, then hand it the real image tokens.

Fitting the projector and the language model end to end on the answers alone (``fit_llava``, the easy-VQA stage 2)
taught the bundled model to count but left reading, location and presence at chance within a 2-core budget: an
answer word is one bit of supervision about a content-based lookup over 144 tokens. This stage gives that lookup a
vocabulary. Every image token gets a *word target* in the language model's own embedding space, read off the scene
layout: for a token a digit covers, the sum of the embeddings of the digit's word, its row word and its column word
(``"7" + "top" + "left"``); for a background token, the ``<unk>`` embedding. A question word then matches the image
tokens that carry it, which is what attention does well. Three phases, all with the tower frozen:

1. **alignment**: the projector alone regresses its outputs onto the word targets (the feature-alignment stage of
   LLaVA, Liu et al. 2023, arXiv 2304.08485, with the targets read off the layout instead of a caption);
2. **reading on words**: the language model answers with the word targets put in place of the image tokens, starting
   with the digit tokens only and adding the background tokens back over a curriculum, so that the lookup is learnt
   before the haystack is (curriculum learning, Bengio et al. 2009);
3. **reading the image**: the real projected tokens, with the alignment regression kept as an auxiliary loss.

Every phase trains through the stock ``LlavaForConditionalGeneration`` forward (``inputs_embeds``), so the saved
model is a plain transformers checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fastvision.bundled.train import FitSettings, _collate, _progress, shuffled_batches, stage_two_optimizer

TARGET_SCALE = 4e-4  # the variance of an initialised embedding (std 0.02): keeps the regression loss near 1


@dataclass(frozen=True)
class ReadingSchedule:
    """The digits stage 2's phase lengths and weights (stage-2 steps and batch come from ``FitSettings``)."""

    align_steps: int = 300  # phase 1, projector only, batch 64
    word_share: float = 0.5  # phase 2, this share of the stage-2 steps: word targets in place of the image tokens
    curriculum: float = 0.17  # background tokens join from this fraction of the steps, all of them by twice it
    feature_weight: float = 5.0  # phase 3: weight of the alignment regression beside the answer loss


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
    """Phase 1: the projector alone regresses onto the word targets; returns the last loss."""
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


def background_share(step: int, steps: int, curriculum: float) -> float:
    """The share of background tokens kept at ``step``: none before ``curriculum`` of the steps, all after twice it."""
    if curriculum <= 0:
        return 1.0
    return min(1.0, max(0.0, (step / steps - curriculum) / curriculum))


def fit_reader(
    model: Any,
    processor: Any,
    encoded: tuple[torch.Tensor, list[list[int]], list[int], list[int]],
    token_labels: torch.Tensor,
    settings: FitSettings,
    schedule: ReadingSchedule,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Phases 1-3 on the encoded training questions ``(pixels, prompts, answers, image rows)``; returns statistics.

    ``token_labels`` (images, 144) is every training image's token layout (``patch_labels``), in pixel order.
    """
    tokenizer = processor.tokenizer
    pixels, prompts, answers, images = encoded
    model.model.vision_tower.requires_grad_(False)
    align_loss = align_projector(model, tokenizer, pixels, token_labels, schedule.align_steps, generator)
    if settings.progress:
        print(f"stage 2, phase 1 (projector alignment): {schedule.align_steps} steps, loss {align_loss:.4f}")
    trainable, optimizer, scheduler = stage_two_optimizer(model, settings)
    image_token = model.config.image_token_id
    embed = model.get_input_embeddings()
    steps = settings.steps
    losses: list[float] = []
    bar = _progress(settings.progress, steps)
    model.train()
    for step, chosen in enumerate(shuffled_batches(len(prompts), settings, generator)):
        ids, mask, labels = _collate([prompts[i] for i in chosen], [answers[i] for i in chosen],
                                     tokenizer.eos_token_id, tokenizer.pad_token_id)  # fmt: skip
        rows = [images[i] for i in chosen]
        targets = word_targets(model, tokenizer, token_labels[rows])
        on_words = step < schedule.word_share * steps
        tokens = targets if on_words else _image_tokens(model, pixels[rows])
        embeds = embed(ids).clone()
        is_image = ids == image_token
        embeds[is_image] = tokens.reshape(-1, tokens.shape[-1]).to(embeds.dtype)
        share = background_share(step, steps, schedule.curriculum)
        if share < 1.0:
            from fastvision.evals.digits_data import BACKGROUND_CLASS

            kept = (token_labels[rows] != BACKGROUND_CLASS) | (
                torch.rand(token_labels[rows].shape, generator=generator) < share
            )
            keep = ~is_image
            keep[is_image] = kept.flatten()
            embeds, mask, labels = _drop_background(embeds, mask, labels, keep & mask.bool())
        loss = model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        if not on_words:
            loss = loss + schedule.feature_weight * _alignment_loss(tokens, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar(step, losses[-1])
    model.model.vision_tower.requires_grad_(True)
    model.eval()
    return {"alignment_final_loss": align_loss, "final_loss_mean_last_50": sum(losses[-50:]) / len(losses[-50:])}
