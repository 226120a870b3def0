"""The FastV engine: hooks on one patched model instance.

One forward of a patched VLM, in the order the pieces act (shared/DESIGN.md §1):

1. a pre-hook on the multimodal model reads where the visual tokens are and opens a per-thread forward context;
2. the scoring layer's attention (layer ``k-1``, see :mod:`fastvision.fastv.scoring`) yields the attention each token
   receives, from which :func:`~fastvision.fastv.selection.select_tokens` picks the kept set;
3. pre-hooks on layers ``>= k`` gather the hidden states (at layer ``k``), RoPE cos/sin, position ids and the 4-D
   mask, so those layers compute on the kept tokens only, with their original positions;
4. in decode steps the pruned cache layers hold fewer keys than layer 0, so only the mask's key axis is gathered.

State lives in a thread-local stack (one context per forward) and in a per-cache table for decoding, so concurrent
requests on one model never share kept-token state.
"""

from __future__ import annotations

import copy
import functools
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastvision.fastv.adapter import VLMAdapter
from fastvision.fastv.config import FastVConfig
from fastvision.fastv.gather import causal_mask, gather_key_axis, gather_square_mask, gather_tokens
from fastvision.fastv.record import KeptTokens
from fastvision.fastv.scoring import (
    ATTENTION_NAME,
    ScoringSite,
    attach_site,
    attention_received,
    register_scoring_attention,
)
from fastvision.fastv.selection import Selection, select_tokens
from fastvision.handle import PatchHandle, set_attribute


@dataclass
class DecodeState:
    """What decode steps need to know about a cache that a pruned prefill filled."""

    index: torch.Tensor  # (B, L') original positions held by the pruned cache layers
    valid: torch.Tensor  # (B, L') False for slots
    prefill_length: int
    has_slots: bool


@dataclass
class ForwardContext:
    mode: str  # "off" (run unchanged), "prefill" (score and prune) or "decode" (pruned cache)
    prunable: torch.Tensor | None = None
    num_drop: list[int] = field(default_factory=list)
    last_positions: torch.Tensor | None = None
    query_valid: torch.Tensor | None = None
    selection: Selection | None = None
    decode: DecodeState | None = None
    total_length: int = 0
    query_length: int = 0
    continuation: bool = False  # the cache already held tokens: a decode step, not a prefill
    memo: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def memoized(self, original: Any, build: Callable[[Any], Any]) -> Any:
        """Build the pruned version of ``original`` once per forward and per original object.

        Memoizing per object (not once per forward) matters for families that pass different RoPE tables or masks to
        different layer types (DESIGN.md §3).
        """
        entry = self.memo.get(id(original))
        if entry is None or entry[0] is not original:
            entry = (original, build(original))
            self.memo[id(original)] = entry
        return entry[1]


class FastVEngine:
    """Installs and runs FastV on one model instance (never on its class)."""

    def __init__(self, model: nn.Module, adapter: VLMAdapter, config: FastVConfig) -> None:
        self.model = model
        self.adapter = adapter
        self.config = config
        self.multimodal = adapter.multimodal_model(model)
        self.language_model = adapter.language_model(model)
        self.text_config = adapter.text_config(model)
        self.layers = adapter.decoder_layers(model)
        self.scoring_module = adapter.attention_module(self.layers[config.k - 1])
        self._local = threading.local()
        self._decode_states: weakref.WeakKeyDictionary[Any, DecodeState] = weakref.WeakKeyDictionary()

    # -- installation --
    def install(self, handle: PatchHandle) -> None:
        base_config = self.scoring_module.config
        eager = getattr(sys.modules[type(self.scoring_module).__module__], "eager_attention_forward", None)
        if base_config._attn_implementation == "eager" and eager is None:
            raise ValueError(f"{type(self.scoring_module).__name__} has no eager attention function to delegate to.")
        register_scoring_attention()
        site = ScoringSite(observer=self._observe_scoring, base_config=base_config, eager_attention=eager)
        handle.record("attach scoring site", attach_site(self.scoring_module, site))
        routed = copy.copy(base_config)
        routed._attn_implementation_internal = ATTENTION_NAME
        set_attribute(handle, self.scoring_module, "config", routed)

        self._register(handle, self.multimodal.register_forward_pre_hook(self._begin_forward, with_kwargs=True))
        self._register(
            handle, self.multimodal.register_forward_hook(self._end_forward, with_kwargs=True, always_call=True)
        )
        for index in range(self.config.k, len(self.layers)):
            hook = functools.partial(self._layer_pre_hook, first=index == self.config.k)
            self._register(handle, self.layers[index].register_forward_pre_hook(hook, with_kwargs=True))
        if self.model is not self.multimodal:
            self._register(handle, self.model.register_forward_pre_hook(self._refuse_labels, with_kwargs=True))
        if callable(getattr(self.model, "generate", None)):
            set_attribute(handle, self.model, "generate", self._guard_generate(self.model.generate))

    @staticmethod
    def _register(handle: PatchHandle, hook: torch.utils.hooks.RemovableHandle) -> None:
        handle.record("remove hook", hook.remove)

    # -- per-thread forward contexts --
    def _stack(self) -> list[ForwardContext]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _current(self) -> ForwardContext | None:
        stack = self._stack()
        return stack[-1] if stack else None

    def last_kept(self) -> KeptTokens | None:
        """The kept-token record of this thread's latest prefill (None if it had no visual tokens)."""
        return getattr(self._local, "last", None)

    def _begin_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        context = self._context_for(self.adapter.bind_inputs(module, args, kwargs))
        self._stack().append(context)

    def _end_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        stack = self._stack()
        if not stack:
            return
        context = stack.pop()
        if output is None or context.continuation:
            return
        self._finish_prefill(context, getattr(output, "past_key_values", None))

    def _finish_prefill(self, context: ForwardContext, cache: Any) -> None:
        selection = context.selection
        if context.mode == "off" or selection is None:
            self._local.last = None
            return
        self._local.last = KeptTokens(self.config, selection.prunable, selection.kept, selection.scores)
        if cache is not None and not selection.identity:
            self._decode_states[cache] = DecodeState(
                selection.index, selection.valid, int(selection.kept.shape[1]), selection.has_slots
            )

    @contextmanager
    def prefill(self, prunable: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Iterator[None]:
        """Run the language model directly (bypassing the multimodal forward) as one pruned prefill.

        Used to count FLOPs of real-size configs on the ``meta`` device, where the multimodal merge cannot run.
        ``prunable`` must be a real (CPU) tensor; everything derived from scores may live on ``meta``.
        """
        self._stack().append(self._prefill_context(prunable, attention_mask))
        try:
            yield
        finally:
            context = self._stack().pop()
            self._finish_prefill(context, None)

    def _context_for(self, inputs: dict[str, Any]) -> ForwardContext:
        if self.model.training and getattr(self.language_model, "gradient_checkpointing", False):
            raise NotImplementedError("FastV pruning does not support gradient checkpointing; disable it or unpatch.")
        cache = inputs.get("past_key_values")
        reference = inputs.get("input_ids")
        if reference is None:
            reference = inputs.get("inputs_embeds")
        length = reference.shape[1] if reference is not None else 0
        past = cache.get_seq_length() if cache is not None else 0
        self._check_sliding_window(past + length)
        if past > 0:
            # A placeholder id generated as a decode token is just a token; new pixels on a filled cache are not.
            if any(key.startswith("pixel_values") and value is not None for key, value in inputs.items()):
                raise NotImplementedError(
                    "FastV prunes visual tokens in the prefill only, but this forward adds images or videos to a "
                    f"non-empty cache ({past} tokens). Start a new cache for a new image."
                )
            state = self._decode_states.get(cache)
            return ForwardContext(
                "off" if state is None else "decode",
                decode=state,
                total_length=past + length,
                query_length=length,
                continuation=True,
            )
        prunable = self._prunable(self.adapter.visual_masks(self.model, inputs))
        if prunable is None or not bool(prunable.any()):
            return ForwardContext("off")
        self._check_cache(cache)
        return self._prefill_context(prunable, inputs.get("attention_mask"))

    def _prunable(self, masks: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Union of the masks of the modalities the config prunes (image and video rank in one pool)."""
        kinds = ("image", "video") if self.config.modality == "all" else (self.config.modality,)
        selected = [masks[kind] for kind in kinds if kind in masks]
        if not selected:
            return None
        prunable = selected[0]
        for mask in selected[1:]:
            prunable = prunable | mask
        return prunable

    def _prefill_context(self, prunable: torch.Tensor, attention_mask: torch.Tensor | None) -> ForwardContext:
        batch, length = prunable.shape
        counts = prunable.sum(dim=1).tolist()
        num_drop = [self.config.num_dropped(int(count)) for count in counts]
        if attention_mask is not None and attention_mask.dim() != 2:
            raise NotImplementedError(
                f"FastV needs a 2-D (batch, sequence) attention_mask; got shape {tuple(attention_mask.shape)}."
            )
        if attention_mask is None:
            query_valid = torch.ones(batch, length, dtype=torch.bool, device=prunable.device)
        else:
            query_valid = attention_mask[:, -length:].to(torch.bool)
        # The last non-padding position of each row (left or right padding alike).
        positions = torch.arange(length, device=query_valid.device)
        last_positions = torch.where(query_valid, positions, -1).amax(dim=1).clamp_min(0)
        return ForwardContext("prefill", prunable, num_drop, last_positions, query_valid)

    def _check_cache(self, cache: Any) -> None:
        if cache is None:
            return
        from transformers import DynamicCache

        if not isinstance(cache, DynamicCache):
            raise NotImplementedError(
                f"FastV supports DynamicCache only, got {type(cache).__name__}: pruned layers hold fewer tokens than "
                "the slots a static cache reserves. Use the default cache (cache_implementation=None)."
            )

    def _check_sliding_window(self, total_length: int) -> None:
        window = getattr(self.text_config, "sliding_window", None)
        if window is not None and total_length > window:
            raise NotImplementedError(
                f"Sequence length {total_length} exceeds the text model's sliding_window={window}: FastV does not "
                "support sliding-window attention beyond the window yet."
            )

    # -- scoring and pruning --
    def _observe_scoring(
        self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: Any, scaling: float
    ) -> None:
        context = self._current()
        if context is None or context.mode != "prefill" or context.selection is not None:
            return
        device = query.device
        scores = attention_received(
            query,
            key,
            mask,
            scaling,
            self.config.scoring,
            context.last_positions.to(device),
            context.query_valid.to(device),
        )
        context.selection = select_tokens(scores, context.prunable.to(device), context.num_drop)

    def _layer_pre_hook(
        self, layer: nn.Module, args: tuple, kwargs: dict[str, Any], first: bool
    ) -> tuple[tuple, dict[str, Any]] | None:
        context = self._current()
        if context is None or context.mode == "off":
            return None
        if context.mode == "decode":
            return self._decode_inputs(context, args, kwargs)
        selection = context.selection
        if selection is None:
            raise RuntimeError("FastV: the scoring layer did not run before the first pruned layer.")
        if selection.identity:
            return None
        if first:
            args, kwargs = _map_hidden(args, kwargs, lambda hidden: gather_tokens(hidden, selection.index))
        kwargs = dict(kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None or selection.has_slots:
            kwargs["attention_mask"] = context.memoized(mask, lambda m: self._prefill_mask(m, selection))
        if kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = context.memoized(
                kwargs["position_embeddings"], lambda pair: tuple(gather_tokens(t, selection.index) for t in pair)
            )
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = context.memoized(
                kwargs["position_ids"], lambda ids: gather_tokens(ids, selection.index, dim=ids.dim() - 1)
            )
        return args, kwargs

    @staticmethod
    def _prefill_mask(mask: torch.Tensor | None, selection: Selection) -> torch.Tensor:
        if mask is None:
            length = selection.kept.shape[1]
            mask = causal_mask(torch.arange(length, device=selection.index.device), length)
        return gather_square_mask(mask, selection.index, selection.valid)

    def _decode_inputs(
        self, context: ForwardContext, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[tuple, dict[str, Any]] | None:
        state = context.decode
        mask = kwargs.get("attention_mask")
        if mask is None and not state.has_slots:
            return None  # every pruned row holds the same keys and nothing is masked: SDPA's defaults are right
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = context.memoized(mask, lambda m: self._decode_mask(m, context))
        return args, kwargs

    @staticmethod
    def _decode_mask(mask: torch.Tensor | None, context: ForwardContext) -> torch.Tensor:
        state = context.decode
        total = mask.shape[-1] if mask is not None else context.total_length
        device = state.index.device
        if mask is None:
            mask = causal_mask(torch.arange(total - context.query_length, total, device=device), total)
        batch = state.index.shape[0]
        fresh = torch.arange(state.prefill_length, total, device=device).expand(batch, -1)
        key_index = torch.cat([state.index, fresh], dim=1)
        key_valid = torch.cat([state.valid, torch.ones_like(fresh, dtype=torch.bool)], dim=1)
        return gather_key_axis(mask, key_index, key_valid)

    # -- guards --
    def _refuse_labels(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if kwargs.get("labels") is not None and self.config.ratio > 0:
            raise ValueError(
                "labels cannot be passed to a FastV-patched model with ratio > 0: pruned forwards return logits for "
                "the kept tokens only. Compute the loss yourself from fastvision.kept_tokens(model), or unpatch."
            )

    def _guard_generate(self, generate: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(generate)
        def guarded_generate(*args: Any, **kwargs: Any) -> Any:
            self._check_generation(kwargs)
            return generate(*args, **kwargs)

        return guarded_generate

    def _check_generation(self, kwargs: dict[str, Any]) -> None:
        generation_config = kwargs.get("generation_config") or getattr(self.model, "generation_config", None)

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


def _map_hidden(args: tuple, kwargs: dict[str, Any], fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[tuple, dict]:
    """Apply ``fn`` to the hidden states, whether passed positionally (as transformers does) or by keyword."""
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = fn(kwargs["hidden_states"])
    return args, kwargs
