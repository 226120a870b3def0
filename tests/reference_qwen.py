"""An independent FastV reference for Qwen2-VL: M-RoPE positions by hand, one sample at a time, a manual layer loop.

Like ``tests/reference.py`` it shares no code with the engine: positions follow the Qwen2-VL paper's M-RoPE rule
(arXiv 2409.12191, §2.1: text tokens advance all three axes together; an image's tokens take the temporal id of its
start and height/width ids of their merged-grid row and column; the next text token starts after the largest id),
scores come from an explicit q·kᵀ softmax, and each sample runs its pruned layers alone, with no slots or gathered
masks.
"""

from __future__ import annotations

import math

import torch

from tests.reference import attention_rows


def mrope_positions(input_ids: list[int], image_token: int, grids: list[tuple[int, int]]) -> torch.Tensor:
    """(3, n) temporal/height/width ids of one unpadded sample whose images have merged grids ``grids`` (h, w)."""
    columns, position, images, index = [], 0, iter(grids), 0
    while index < len(input_ids):
        if input_ids[index] != image_token:
            columns.append((position, position, position))
            position, index = position + 1, index + 1
            continue
        height, width = next(images)
        columns += [(position, position + row, position + col) for row in range(height) for col in range(width)]
        position, index = position + max(height, width), index + height * width
    return torch.tensor(columns).T


def merged_embeddings(model, inputs: dict[str, torch.Tensor], image_token: int) -> torch.Tensor:
    """Input embeddings with every image's features in its placeholders, in batch order (Qwen2-VL's merge)."""
    inner = model.model
    embeds = inner.get_input_embeddings()(inputs["input_ids"])
    features = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
    pooled = features.pooler_output
    pooled = (
        torch.cat(list(pooled), dim=0) if isinstance(pooled, (list, tuple)) else pooled.reshape(-1, embeds.shape[-1])
    )
    placeholder = (inputs["input_ids"] == image_token)[..., None].expand_as(embeds)
    return embeds.masked_scatter(placeholder, pooled.to(embeds.dtype))


def _run_layers(model, hidden, positions, layers):
    """Run ``layers`` on one sample: hidden (1, n, d), M-RoPE ids (3, n); a causal mask in original order."""
    language_model = model.model.language_model
    cos, sin = language_model.rotary_emb(hidden, positions[:, None, :])
    n = hidden.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin))
    return hidden


def _scores(model, hidden, positions, k, scoring, prompt_rows):
    """Attention each position receives at layer k-1 (explicit softmax, mean over heads), in original order."""
    causal = torch.ones(hidden.shape[1], hidden.shape[1], dtype=torch.bool).tril()
    probabilities = attention_rows(model, hidden, k, positions[:, None, :], causal)
    return probabilities[prompt_rows[-1]] if scoring == "last" else probabilities[prompt_rows].mean(0)


def reference_fastv_qwen(
    model,
    inputs: dict[str, torch.Tensor],
    image_token: int,
    *,
    k: int = 2,
    ratio: float = 0.5,
    scoring: str = "last",
    prompt_length: int | None = None,
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Per-sample kept image positions and logits at the kept non-padding positions (one FastV stage).

    Positions at or after ``prompt_length`` are generated tokens: never pruned and not used for scoring.
    """
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    batch, length = input_ids.shape
    prompt_length = length if prompt_length is None else prompt_length
    merge = model.config.vision_config.spatial_merge_size
    grids = iter([(int(h) // merge, int(w) // merge) for _, h, w in inputs["image_grid_thw"].tolist()])
    embeds = merged_embeddings(model, inputs, image_token)
    layers = model.model.language_model.layers
    kept_images, logits = [], []
    for b in range(batch):
        keep = [i for i in range(length) if attention_mask[b, i]]
        ids = [int(input_ids[b, i]) for i in keep]
        row_grids = [next(grids) for _ in range(sum(1 for j, t in enumerate(ids) if t == image_token and (
            j == 0 or ids[j - 1] != image_token)))]  # fmt: skip
        all_positions = mrope_positions(ids, image_token, row_grids)
        hidden = _run_layers(model, embeds[b : b + 1, keep], all_positions, layers[: k - 1])
        prompt_rows = [row for row, i in enumerate(keep) if i < prompt_length]
        scores = _scores(model, hidden, all_positions, k, scoring, prompt_rows)
        hidden = _run_layers(model, hidden, all_positions, layers[k - 1 : k])
        images = [row for row, i in enumerate(keep) if i < prompt_length and ids[row] == image_token]
        drop = math.floor(ratio * len(images) + 1e-9)
        dropped = set(sorted(images, key=lambda row: (float(scores[row]), row))[:drop])
        rows = [row for row in range(len(keep)) if row not in dropped]
        hidden = _run_layers(model, hidden[:, rows], all_positions[:, rows], layers[k:])
        kept_images.append([keep[row] for row in rows if ids[row] == image_token and keep[row] < prompt_length])
        logits.append(model.lm_head(model.model.language_model.norm(hidden))[0])
    return kept_images, logits
