"""VisionZip's kept set for one image: dominant tokens by [CLS] attention, contextual tokens merged by key
similarity (arXiv 2412.04467, §3.2).

The signals come from the vision-tower layer whose output LLaVA feeds the projector. The dominant tokens are the
patches the [CLS] query attends to most (summed over heads). Of the other patches, ``contextual`` targets are taken
at a uniform stride in their original order; every remaining patch joins the target whose key (averaged over heads)
is most cosine-similar, and each target becomes its own features plus the mean of the features that joined it. The
merge happens on the tower's features, before the projector, as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cls_attention_and_keys(query: torch.Tensor, key: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """From one vision attention's (images, heads, T, head_dim) query and key: the [CLS] row's softmax summed over
    heads (images, T), and the keys averaged over heads (images, T, head_dim)."""
    scores = (query[:, :, :1].float() @ key.float().transpose(-1, -2)) * scaling
    return torch.softmax(scores, dim=-1).sum(dim=1)[:, 0], key.float().mean(dim=1)


def zip_image(
    features: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, kept: int, contextual: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's (P, C) patch ``features`` after VisionZip keeps ``kept`` of its P patches, ``contextual`` of them
    merged; with its [CLS] ``attention`` (P,) and ``keys`` (P, D) over the patches.

    Returns the features with each contextual target replaced by its merge, the kept patch indices (dominant ones
    first), and per-patch scores (2 dominant, 1 contextual, 0 dropped).
    """
    patches = features.shape[0]
    dominant = torch.argsort(attention, descending=True, stable=True)[: kept - contextual]
    scores = torch.zeros(patches, dtype=torch.float32, device=features.device)
    scores[dominant] = 2.0
    if contextual == 0:
        return features, dominant, scores
    is_dominant = torch.zeros(patches, dtype=torch.bool, device=features.device)
    is_dominant[dominant] = True
    pool = (~is_dominant).nonzero().flatten()
    step = max(1, len(pool) // contextual)
    is_target = torch.zeros(len(pool), dtype=torch.bool, device=features.device)
    is_target[torch.arange(0, len(pool), step, device=features.device)[:contextual]] = True
    targets, others = pool[is_target], pool[~is_target]
    normed = F.normalize(keys.float(), dim=-1)
    assignment = torch.argmax(normed[others] @ normed[targets].T, dim=1)  # (others,) index into targets
    sums = torch.zeros(len(targets), features.shape[1], dtype=torch.float32, device=features.device)
    sums.index_add_(0, assignment, features[others].float())
    counts = torch.bincount(assignment, minlength=len(targets)).clamp_min(1)[:, None]
    merged = features.clone()
    merged[targets] = (features[targets].float() + sums / counts).to(features.dtype)
    scores[targets] = 1.0
    return merged, torch.cat([dominant, targets]), scores
