"""What a patched model refuses rather than answers wrongly: generation modes and arguments FastV cannot honour."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from fastvision.fastv.config import FastVConfig


def refuse_labels(config: FastVConfig) -> Callable[[nn.Module, tuple, dict[str, Any]], None]:
    """Forward pre-hook: pruned forwards return logits for the kept tokens only, so a loss over labels is wrong."""

    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if kwargs.get("labels") is not None and any(ratio > 0 for _, ratio in config.stages):
            raise ValueError(
                "labels cannot be passed to a FastV-patched model with ratio > 0: pruned forwards return logits for "
                "the kept tokens only. Compute the loss yourself from fastvision.kept_tokens(model), or unpatch."
            )

    return hook


def check_generation(
    model: nn.Module, args: tuple, kwargs: dict[str, Any], check_length: Callable[[int, str], None] | None = None
) -> None:
    """Raise for generation modes whose cache handling would be wrong after pruning, before anything is generated.

    ``check_length(total, description)`` is given the longest sequence this call can reach (prompt plus
    ``max_new_tokens``, or ``max_length``), so a length limit fires before the first token rather than mid-way.
    """
    generation_config = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def setting(name: str) -> Any:
        return kwargs[name] if name in kwargs else getattr(generation_config, name, None)

    if (setting("num_beams") or 1) > 1:
        raise NotImplementedError(
            f"FastV does not support beam search yet (num_beams={setting('num_beams')}); use num_beams=1."
        )
    if kwargs.get("assistant_model") is not None or setting("prompt_lookup_num_tokens"):
        raise NotImplementedError("FastV does not support assisted or prompt-lookup decoding yet.")
    implementation = setting("cache_implementation")
    if implementation not in (None, "dynamic"):
        raise NotImplementedError(
            f"FastV supports the dynamic cache only, got cache_implementation={implementation!r}; "
            "leave it unset or use 'dynamic'."
        )
    if setting("prefill_chunk_size"):
        raise NotImplementedError(
            f"FastV does not support chunked prefill (prefill_chunk_size={setting('prefill_chunk_size')}): it ranks "
            "image tokens over the whole prompt in one forward. Leave prefill_chunk_size unset."
        )
    if check_length is not None:
        given = [kwargs[name] for name in ("input_ids", "inputs", "inputs_embeds") if kwargs.get(name) is not None]
        prompt = given[0] if given else (args[0] if args else None)
        prompt_length = int(prompt.shape[1]) if prompt is not None and prompt.dim() > 1 else 0
        new_tokens = setting("max_new_tokens")
        # The last generated token is never fed back, so the longest forward is one shorter than the output.
        if new_tokens is not None:
            total = prompt_length + int(new_tokens) - 1
            check_length(total, f"prompt {prompt_length} + max_new_tokens {new_tokens} - 1")
        elif setting("max_length") is not None:
            check_length(int(setting("max_length")) - 1, f"max_length {setting('max_length')} - 1")


def guard_generate(
    model: nn.Module, generate: Callable[..., Any], check_length: Callable[[int, str], None] | None = None
) -> Callable[..., Any]:
    """Wrap a bound ``generate`` so unsupported modes and lengths raise before any work."""

    @functools.wraps(generate)
    def guarded_generate(*args: Any, **kwargs: Any) -> Any:
        check_generation(model, args, kwargs, check_length)
        return generate(*args, **kwargs)

    return guarded_generate


def check_dynamic_cache(cache: Any) -> None:
    """Refuse a cache other than DynamicCache: pruned layers hold fewer tokens than a static cache's slots."""
    if cache is None:
        return
    from transformers import DynamicCache

    if not isinstance(cache, DynamicCache):
        raise NotImplementedError(
            f"FastV supports DynamicCache only, got {type(cache).__name__}: pruned layers hold fewer tokens than "
            "the slots a static cache reserves. Use the default cache (cache_implementation=None)."
        )


def check_sliding_window(text_config: Any, total_length: int, description: str = "") -> None:
    """Refuse a sequence longer than the text model's sliding window (the pruned masks assume it fits)."""
    window = getattr(text_config, "sliding_window", None)
    if window is not None and total_length > window:
        what = f" ({description})" if description else ""
        raise NotImplementedError(
            f"Sequence length {total_length}{what} exceeds the text model's sliding_window={window}: FastV does "
            "not support sliding-window attention beyond the window yet."
        )
