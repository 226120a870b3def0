"""An independent FastV reference for tests: one sample at a time, a manual loop over the decoder layers.

It shares no code with the engine. It scores with an explicit q·kᵀ softmax, picks the kept set with a Python sort,
and runs the pruned layers on each sample alone (no slots, no gathered masks), so agreement with the engine is
evidence for both the selection and the batched mask/position plumbing.
"""

from __future__ import annotations

import math

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from fastvision.testing import IMAGE_TOKEN_ID


def merged_embeddings(model, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
    """Input embeddings with the image features scattered into the image-token placeholders (LLaVA's merge)."""
    inner = model.model
    embeds = inner.get_input_embeddings()(input_ids)
    if pixel_values is not None:
        features = inner.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        features = torch.cat(list(features), dim=0).to(embeds.dtype)
        placeholder = (input_ids == model.config.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(placeholder, features)
    return embeds


def _run_layers(model, hidden, positions, valid, layers):
    """Run ``layers`` on one sample: hidden (1, n, d), original positions (n,), key validity (n,)."""
    language_model = model.model.language_model
    cos, sin = language_model.rotary_emb(hidden, positions[None])
    allowed = (positions[None, :] <= positions[:, None]) & valid[None, :]
    mask = allowed[None, None]
    if language_model.config._attn_implementation == "eager":  # eager attention adds its mask to the logits
        mask = torch.zeros(mask.shape, dtype=hidden.dtype).masked_fill(~mask, torch.finfo(hidden.dtype).min)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=positions[None])
    return hidden


def attention_rows(model, hidden, k, rotary_positions, allowed):
    """(n, n) head-averaged softmax of layer k-1's explicit q·kᵀ for one sample, from that layer's input.

    ``rotary_positions`` go to the model's own rotary embedding as it takes them ((1, n) ids, or (3, 1, n) for
    M-RoPE); ``allowed`` (n, n) says which keys each query may see.
    """
    language_model = model.model.language_model
    layer = language_model.layers[k - 1]
    attention = layer.self_attn
    normed = layer.input_layernorm(hidden)
    n, head_dim = hidden.shape[1], attention.head_dim
    q = attention.q_proj(normed).view(1, n, -1, head_dim).transpose(1, 2)
    key = attention.k_proj(normed).view(1, n, -1, head_dim).transpose(1, 2)
    cos, sin = language_model.rotary_emb(hidden, rotary_positions)
    q, key = apply_rotary_pos_emb(q, key, cos, sin)
    key = key.repeat_interleave(q.shape[1] // key.shape[1], dim=1)
    logits = (q.float() @ key.float().transpose(-1, -2)) * attention.scaling
    return torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1).mean(1)[0]


def _scores(model, hidden, positions, k, scoring, prompt_rows):
    """Attention each position receives at layer k-1, from that layer's input (explicit softmax, head mean)."""
    allowed = positions[None, :] <= positions[:, None]
    probabilities = attention_rows(model, hidden, k, positions[None], allowed)
    if scoring == "last":
        return probabilities[prompt_rows[-1]]
    return probabilities[prompt_rows].mean(0)


def reference_fastv(
    model,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None,
    *,
    k: int = 2,
    ratio: float = 0.5,
    schedule: list[tuple[int, float]] | None = None,
    scoring: str = "last",
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    prompt_length: int | None = None,
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Per-sample kept image positions (after the last stage) and logits at the kept non-padding positions.

    Each sample runs alone on its non-padding tokens. Positions at or after ``prompt_length`` (generated tokens
    appended to the prompt) are never pruned and are not part of scoring, mimicking a cached decode after a pruned
    prefill.
    """
    batch, length = input_ids.shape
    prompt_length = length if prompt_length is None else prompt_length
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    if position_ids is None:
        position_ids = torch.arange(length)[None].expand(batch, -1)
    stages = schedule if schedule is not None else [(k, ratio)]
    embeds = merged_embeddings(model, input_ids, pixel_values)
    layers = model.model.language_model.layers
    kept_images, logits = [], []
    for b in range(batch):
        keep = [i for i in range(length) if attention_mask[b, i]]
        hidden, done = embeds[b : b + 1, keep], 0
        for stage_layer, stage_ratio in stages:
            positions = position_ids[b, keep]
            every = torch.ones(len(keep), dtype=torch.bool)
            hidden = _run_layers(model, hidden, positions, every, layers[done : stage_layer - 1])
            prompt_rows = [row for row, i in enumerate(keep) if i < prompt_length]
            scores = _scores(model, hidden, positions, stage_layer, scoring, prompt_rows)
            hidden = _run_layers(model, hidden, positions, every, layers[stage_layer - 1 : stage_layer])
            images = [row for row, i in enumerate(keep) if i < prompt_length and input_ids[b, i] == IMAGE_TOKEN_ID]
            drop = math.floor(stage_ratio * len(images) + 1e-9)
            dropped = set(sorted(images, key=lambda row: (float(scores[row]), keep[row]))[:drop])
            rows = [row for row in range(len(keep)) if row not in dropped]
            hidden, keep, done = hidden[:, rows], [keep[row] for row in rows], stage_layer
        positions = position_ids[b, keep]
        hidden = _run_layers(model, hidden, positions, torch.ones(len(keep), dtype=torch.bool), layers[done:])
        kept_images.append([i for i in keep if i < prompt_length and input_ids[b, i] == IMAGE_TOKEN_ID])
        logits.append(model.lm_head(model.model.language_model.norm(hidden))[0])
    return kept_images, logits
