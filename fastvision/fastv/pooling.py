"""The spatial-pooling baseline (``scoring="pool"``): average image tokens over bins of their 2-D grid.

Downsampling the image tokens, with no ranking at all, is the training-free baseline that VTC-Bench (arXiv
2510.07143, §3) finds to beat many pruning methods on easy benchmarks. Here it is a *merge*: each of an image's
``m`` kept tokens stands for one rectangular bin of its ``h x w`` token grid, and its hidden state entering layer
``k`` becomes the mean of the bin's hidden states. The bin's first token (its top-left, in sequence order) carries the
mean, so the merged token keeps a real position for RoPE and the cache, and the engine's gathers, masks, padding
and cached decoding apply unchanged.

The ``m`` bins tile the grid exactly: ``h'`` row bands (as near to square bins as the count allows), band ``j``
split into ``floor((j+1) m / h') - floor(j m / h')`` column bins, so ``m`` is the same kept-token count FastV and the
other baselines keep (``n - floor(ratio * n)``), not only the counts a fixed window allows.

The family's adapter names the token grid of one image (``VLMAdapter.image_grid``: LLaVA's patch grid, Gemma 3's
pooled grid); families whose images have no fixed grid (LLaVA-NeXT's tiles with newline tokens, Qwen-VL's native
resolutions, InternVL's and Aya Vision's tiles) are refused at ``patch`` time.
"""

from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=256)
def grid_bins(height: int, width: int, kept: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bin id of each row-major cell of a ``height x width`` grid, and the first cell of each of the ``kept`` bins."""
    if not 1 <= kept <= height * width:
        raise ValueError(f"Cannot pool a {height}x{width} grid into {kept} bins: allowed is 1..{height * width}.")
    bands = max(math.ceil(kept / width), min(height, kept, math.ceil(math.sqrt(kept * height / width))))
    bins = [0] * (height * width)
    firsts = []
    for band in range(bands):
        rows = range(band * height // bands, (band + 1) * height // bands)
        count = (band + 1) * kept // bands - band * kept // bands
        for column_bin in range(count):
            columns = range(column_bin * width // count, (column_bin + 1) * width // count)
            firsts.append(rows[0] * width + columns[0])
            for row in rows:
                for column in columns:
                    bins[row * width + column] = len(firsts) - 1
    return tuple(bins), tuple(firsts)


def _runs(positions: list[int]) -> list[list[int]]:
    """Split sorted positions into maximal runs of consecutive positions (one per image)."""
    runs: list[list[int]] = []
    for position in positions:
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    return runs


def pool_groups(
    prunable: torch.Tensor, num_drop: list[int], grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores that make :func:`~fastvision.fastv.selection.select_tokens` keep one token per bin, and the groups.

    ``grid`` is the (height, width) token grid of one image; a contiguous run of prunable tokens holds one image or
    several images back to back. Returns ``scores`` (B, L): 1 at each bin's carrier token, 0 at the other prunable
    tokens; and ``group`` (B, L) long: for every position, the position whose token carries its bin's mean (itself
    for non-image tokens). A row's kept count ``n - num_drop`` is shared among its images in proportion to size.
    """
    height, width = grid
    size = height * width
    batch, length = prunable.shape
    group = torch.arange(length).expand(batch, -1).clone()
    scores = torch.zeros(batch, length)
    for row, (mask, drop) in enumerate(zip(prunable.cpu().tolist(), num_drop, strict=True)):
        runs = _runs([position for position, flag in enumerate(mask) if flag])
        images = []
        for run in runs:
            if len(run) % size:
                raise NotImplementedError(
                    f"scoring='pool' needs whole {height}x{width} image grids, but row {row} has a run of {len(run)} "
                    f"image tokens, not a multiple of {size} (a cropped or tiled image). Use another scoring."
                )
            images += [run[start : start + size] for start in range(0, len(run), size)]
        total = len(images) * size
        keep = total - drop
        for number, image in enumerate(images):
            share = (number + 1) * keep // len(images) - number * keep // len(images)
            if share == 0:  # a many-image row at a high ratio: this image keeps no token
                continue
            bins, firsts = grid_bins(height, width, share)
            carriers = torch.tensor([image[first] for first in firsts])
            scores[row, carriers] = 1.0
            group[row, torch.tensor(image)] = carriers[torch.tensor(bins)]
    return scores.to(prunable.device), group.to(prunable.device)


def merge_tokens(hidden: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Replace each carrier's hidden state by the mean of its bin; tokens that carry only themselves are unchanged.

    A token alone in its group is returned bit for bit (the sum of one value divided by 1).
    """
    index = group.to(hidden.device)[..., None].expand_as(hidden)
    sums = torch.zeros_like(hidden).scatter_add(1, index, hidden)
    counts = torch.zeros(group.shape, dtype=hidden.dtype, device=hidden.device)
    counts = counts.scatter_add(1, group.to(hidden.device), torch.ones_like(counts))
    return torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], hidden)
