"""Analytic FLOPs of a (pruned) decoder prefill, as a cross-check on the measured count.

FastV's own model (arXiv 2403.06764, §4.3) counts, per decoder layer with ``n`` tokens, hidden size ``d`` and FFN
size ``m``, ``4nd² + 2n²d + 2ndm`` multiply-adds. That assumes multi-head attention and a two-matrix FFN; LLaMA-style
decoders have grouped KV heads and a gated three-matrix FFN, so :func:`decoder_layer_macs` counts those exactly and
reduces to the paper's formula for the paper's assumptions. Like FlopCounterMode, attention is counted over the full
``n x n`` square (SDPA kernels do not halve the causal work in the count).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecoderShape:
    """The numbers of a decoder that its FLOPs depend on."""

    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    ffn_matrices: int = 3  # gated (SwiGLU) FFN; 2 for a plain FFN

    @classmethod
    def from_config(cls, text_config: Any) -> DecoderShape:
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(
            hidden=text_config.hidden_size,
            ffn=text_config.intermediate_size,
            layers=text_config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=text_config.vocab_size,
        )


def decoder_layer_macs(shape: DecoderShape, tokens: int, keys: int | None = None) -> int:
    """Multiply-adds of one decoder layer on ``tokens`` queries attending to ``keys`` keys (default: the same)."""
    keys = tokens if keys is None else keys
    q_width, kv_width = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    projections = tokens * shape.hidden * (2 * q_width + 2 * kv_width)
    attention = 2 * tokens * keys * q_width
    ffn = shape.ffn_matrices * tokens * shape.hidden * shape.ffn
    return projections + attention + ffn


def fastv_prefill_macs(
    shape: DecoderShape,
    tokens: int,
    *,
    k: int | None = None,
    kept_tokens: int | None = None,
    stages: list[tuple[int, int]] | None = None,
    scoring: str = "last",
    logits: int = 1,
) -> int:
    """Multiply-adds of a prefill of ``tokens`` tokens, plus the LM head on ``logits`` positions.

    Pruning is given either as ``k``/``kept_tokens`` (one stage) or as ``stages``: ``(layer, tokens)`` pairs, each
    meaning that layers from ``layer`` on run on ``tokens`` tokens. With neither, the prefill is unpruned. Each stage
    adds its score row(s) at ``layer - 1``: one query row for ``"last"``, every row for ``"mean"`` (plus the weighted
    sum of those rows). Softmax and masking are elementwise and not counted, as FlopCounterMode does not.
    """
    if stages is None:
        stages = [] if k is None else [(k, tokens if kept_tokens is None else kept_tokens)]
    boundaries = [0] + [layer for layer, _ in stages] + [shape.layers]
    counts = [tokens] + [count for _, count in stages]
    macs = logits * shape.hidden * shape.vocab
    for (start, stop), count in zip(itertools.pairwise(boundaries), counts, strict=True):
        macs += (stop - start) * decoder_layer_macs(shape, count)
    for before in counts[:-1]:  # the score rows of each stage, over the tokens its scoring layer sees
        rows = {"last": 1, "mean": before}.get(scoring, 0)  # "random" and "stride" compute no attention row
        macs += rows * before * shape.heads * shape.head_dim
        if scoring == "mean":  # the rows' weighted sum over the valid queries (one multiply-add per row and key)
            macs += rows * before
    return macs


def fastv_paper_macs(hidden: int, ffn: int, layers: int, tokens: int, k: int | None = None, kept: int = 0) -> int:
    """FastV's formula (§4.3): ``K·f(n) + (T−K)·f(n̂)`` with ``f(n) = 4nd² + 2n²d + 2ndm``."""

    def per_layer(n: int) -> int:
        return 4 * n * hidden**2 + 2 * n**2 * hidden + 2 * n * hidden * ffn

    if k is None:
        return layers * per_layer(tokens)
    return k * per_layer(tokens) + (layers - k) * per_layer(kept)
