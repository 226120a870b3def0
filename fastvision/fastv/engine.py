"""The FastV engine: hooks on one patched model instance.

One forward of a patched VLM, in the order the pieces act:

1. a pre-hook on the multimodal model reads where the visual tokens are and opens a per-thread forward context;
2. the scoring layer's attention (layer ``k-1``, see :mod:`fastvision.fastv.scoring`) yields the attention each token
   receives, from which :func:`~fastvision.fastv.selection.select_tokens` picks the kept set;
3. pre-hooks on layers ``>= k`` gather the hidden states (at layer ``k``), RoPE cos/sin, position ids and the 4-D
   mask, so those layers compute on the kept tokens only, with their original positions;
4. in decode steps the pruned cache layers hold fewer keys than layer 0, so only the mask's key axis is gathered.

A schedule repeats 2-3 per stage: each stage re-ranks the tokens the previous stage kept. The other
token-reduction methods reuse every step but the ranking: DART (arXiv 2502.11494) and DivPrune (arXiv 2503.02175)
choose in the first pruned layer's pre-hook, from the hidden states (:mod:`fastvision.fastv.hidden_site`), and
DivPrune's stage is layer 0 itself, whose cache then still spans the prompt (:mod:`fastvision.fastv.layer_zero`).
State lives in a thread-local stack (one context per forward) and in a per-cache table for decoding, so concurrent
requests on one model never share kept-token state. Every transformers internal the hooks read (argument names,
the cache layout, the attention registry) is resolved at patch time by :mod:`fastvision.fastv.compat`, which raises
if one changed.
"""

from __future__ import annotations

import bisect
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastvision.fastv.adapter import VLMAdapter
from fastvision.fastv.compat import check_layer_call, has_new_media, resolve_internals
from fastvision.fastv.config import FastVConfig, dropped_count
from fastvision.fastv.decode import DecodeState, check_cache_lengths, decode_mask
from fastvision.fastv.gather import gather_tokens, map_hidden_states, prefill_mask
from fastvision.fastv.guards import check_dynamic_cache, check_sliding_window, guard_generate, refuse_labels
from fastvision.fastv.hidden_site import (
    BEFORE_LAYER_ZERO_SCORINGS,
    HIDDEN_STATE_SCORINGS,
    hidden_state_scores,
    key_norms,
)
from fastvision.fastv.layer_zero import cache_in, check_inflated, inflate_layer_zero, layer_zero_decode_mask
from fastvision.fastv.pooling import merge_tokens, pool_groups
from fastvision.fastv.record import KeptTokens, record_stages
from fastvision.fastv.scoring import attention_received, register_scoring_attention, route_scoring
from fastvision.fastv.selection import StageSelection, compose, select_tokens, stride_scores
from fastvision.handle import PatchHandle, set_attribute


@dataclass
class ForwardContext:
    mode: str  # "off" (run unchanged), "prefill" (score and prune) or "decode" (pruned cache)
    prunable: torch.Tensor | None = None
    remaining: list[int] = field(default_factory=list)  # image tokens each row still has
    last_positions: torch.Tensor | None = None
    query_valid: torch.Tensor | None = None
    stages: list[StageSelection] = field(default_factory=list)
    decode: DecodeState | None = None
    total_length: int = 0
    query_length: int = 0
    continuation: bool = False  # the cache already held tokens: a decode step, not a prefill
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, L) placeholder positions per modality
    noise: torch.Generator | None = None  # scoring="random": seeded per forward, so a request is reproducible
    pool_group: torch.Tensor | None = None  # scoring="pool": (B, L) position carrying each token's bin mean
    pivot_norms: torch.Tensor | None = None  # DART: (B, L) key norms at layer k-1, until layer k's input selects
    pending_drops: list[int] = field(default_factory=list)
    restore_cache: Callable[[], None] | None = None  # layer 0 pruned: undoes the cache wrapper once layer 0 ran
    inflated: Any = None  # ... and the cache it wrapped
    memo: dict[tuple[int, int], tuple[Any, Any]] = field(default_factory=dict)

    def memoized(self, stage: int, original: Any, build: Callable[[Any], Any]) -> Any:
        """Build the pruned version of ``original`` once per forward, stage and original object.

        Memoizing per object (not once per forward) matters for families that pass different RoPE tables or masks to
        different layer types (Gemma 3's sliding and global layers, for example).
        """
        key = (stage, id(original))
        entry = self.memo.get(key)
        if entry is None or entry[0] is not original:
            entry = (original, build(original))
            self.memo[key] = entry
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
        self.stage_layers = [k for k, _ in config.stages]
        # Every transformers internal the hooks rely on, checked now so that a renamed one fails patch, not a forward.
        self.internals = resolve_internals(
            self.multimodal,
            list(self.layers),
            [adapter.attention_module(self.layers[k - 1]) for k in self.stage_layers if k > 0],
            self.text_config._attn_implementation,
        )
        self._local = threading.local()
        self._decode_states: weakref.WeakKeyDictionary[Any, DecodeState] = weakref.WeakKeyDictionary()

    # -- installation --
    def install(self, handle: PatchHandle) -> None:
        register_scoring_attention()
        for stage, k in enumerate(self.stage_layers):
            if k > 0 and self.config.scoring not in BEFORE_LAYER_ZERO_SCORINGS:
                module, observer = self.adapter.attention_module(self.layers[k - 1]), self._observe_scoring
                route_scoring(handle, module, functools.partial(observer, stage), self.internals.eager_attention)
        if self.stage_layers[0] == 0:  # pruned before the language model: layer 0's cache is spread back out
            self._register(handle, self.layers[0].register_forward_hook(self._after_layer_zero, always_call=True))
        # prepend: the context is pushed before any other pre-hook can raise, so the always-called end hook that pops
        # it is balanced whichever pre-hook fails.
        begin = self.multimodal.register_forward_pre_hook(self._begin_forward, with_kwargs=True, prepend=True)
        self._register(handle, begin)
        self._register(
            handle, self.multimodal.register_forward_hook(self._end_forward, with_kwargs=True, always_call=True)
        )
        for index in range(self.stage_layers[0], len(self.layers)):
            stage = bisect.bisect_right(self.stage_layers, index) - 1
            hook = functools.partial(self._layer_pre_hook, stage=stage, first=index == self.stage_layers[stage],
                                     index=index)  # fmt: skip
            self._register(handle, self.layers[index].register_forward_pre_hook(hook, with_kwargs=True))
        if self.model is not self.multimodal:
            hook = refuse_labels(self.config)
            self._register(handle, self.model.register_forward_pre_hook(hook, with_kwargs=True))
        if callable(getattr(self.model, "generate", None)):
            guarded = guard_generate(self.model, self.model.generate, self._check_sliding_window)
            set_attribute(handle, self.model, "generate", guarded)

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
        # Push first: the always-called end hook pops exactly one entry, also when building the context raises.
        stack = self._stack()
        stack.append(_FAILED)
        stack[-1] = self._context_for(self.adapter.bind_inputs(module, args, kwargs))

    def _end_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        stack = self._stack()
        if not stack:
            return
        context = stack.pop()
        if context is _FAILED or output is None or context.continuation:
            return
        self._finish_prefill(context, self.internals.output_cache(output))

    def _finish_prefill(self, context: ForwardContext, cache: Any) -> None:
        if context.mode == "off" or len(context.stages) != len(self.stage_layers):
            self._local.last = None
            return
        self._local.last = record_stages(self.config, context.stages, context.prunable, context.masks)
        last = context.stages[-1]
        if cache is not None and not last.identity:
            self._decode_states[cache] = DecodeState(list(context.stages), int(context.prunable.shape[1]))

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
        cache = self.internals.classify_cache(inputs)
        reference = inputs.get("input_ids")
        if reference is None:
            reference = inputs.get("inputs_embeds")
        if reference is None:
            raise RuntimeError(
                "FastV could not classify this forward as a prefill or a decode step: it received neither input_ids "
                f"nor inputs_embeds (arguments: {sorted(inputs)})."
            )
        length = reference.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        self._check_sliding_window(past + length)
        if past > 0:
            # A placeholder id generated as a decode token is just a token; new pixels on a filled cache are not.
            if has_new_media(inputs):
                raise NotImplementedError(
                    "FastV prunes visual tokens in the prefill only, but this forward adds images or videos to a "
                    f"non-empty cache ({past} tokens). Start a new cache for a new image."
                )
            state = self._decode_states.get(cache)
            check_cache_lengths(cache, self.stage_layers, len(self.layers), state, past)
            return ForwardContext(
                "off" if state is None else "decode",
                decode=state,
                total_length=past + length,
                query_length=length,
                continuation=True,
            )
        masks = self.adapter.visual_masks(self.model, inputs)
        prunable = self._prunable(masks)
        if prunable is None or not bool(prunable.any()):
            return ForwardContext("off")
        self._check_cache(cache)
        context = self._prefill_context(prunable, inputs.get("attention_mask"))
        context.masks = masks
        return context

    def prunable_count(self, inputs: dict[str, Any]) -> int:
        """Tokens of the modalities this config prunes in a prefill's ``inputs``; its record is None exactly when 0."""
        prunable = self._prunable(self.adapter.visual_masks(self.model, inputs))
        return 0 if prunable is None else int(prunable.sum())

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
        # The last token is never dropped, even when a prompt ends with an image: its logits predict the next token.
        prunable = prunable & (positions[None, :] != last_positions[:, None])
        counts = [int(count) for count in prunable.sum(dim=1).tolist()]
        return ForwardContext("prefill", prunable, counts, last_positions, query_valid)

    def _check_cache(self, cache: Any) -> None:
        check_dynamic_cache(cache)

    def _check_sliding_window(self, total_length: int, description: str = "") -> None:
        check_sliding_window(self.text_config, total_length, description)

    # -- scoring and pruning --
    def _observe_scoring(
        self, stage: int, module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: Any, scaling: float
    ) -> None:
        context = self._current()
        if context is None or context.mode != "prefill" or len(context.stages) != stage:
            return
        device = query.device
        previous = context.stages[-1] if stage > 0 else None
        prunable = context.prunable.to(device)
        query_valid = context.query_valid.to(device)
        last_positions = context.last_positions.to(device)
        if previous is not None:  # this stage sees the previous stage's tokens (slot coordinates)
            prunable = torch.gather(prunable, 1, previous.index) & previous.valid
            query_valid = torch.gather(query_valid, 1, previous.index) & previous.valid
            last_positions = (previous.index == last_positions[:, None]).to(torch.uint8).argmax(dim=1)
        ratio = self.config.stages[stage][1]
        drops = [dropped_count(ratio, remaining) for remaining in context.remaining]
        if self.config.scoring == "dart":  # one stage; the kept set is chosen from layer k's input (_select_dart)
            context.pivot_norms, context.pending_drops = key_norms(key), drops
            return
        if self.config.scoring == "random":
            if context.noise is None:  # one generator per forward, seeded from the config: requests are reproducible
                context.noise = torch.Generator().manual_seed(self.config.seed)
            scores = torch.rand(prunable.shape, generator=context.noise).to(device)
        elif self.config.scoring == "stride":
            scores = stride_scores(prunable, drops)
        elif self.config.scoring == "pool":  # one stage only (the config refuses schedules): original coordinates
            scores, context.pool_group = pool_groups(prunable, drops, self.adapter.image_grid(self.model))
        else:
            scores = attention_received(query, key, mask, scaling, self.config.scoring, last_positions, query_valid)
        context.remaining = [remaining - drop for remaining, drop in zip(context.remaining, drops, strict=True)]
        context.stages.append(compose(previous, select_tokens(scores, prunable, drops)))

    def _select_from_hidden(self, context: ForwardContext, hidden: torch.Tensor) -> None:
        """The kept set of a method that reads the hidden states entering its first pruned layer."""
        vision = getattr(self, "vision_scores", None)  # VisionZip installs it (fastvision.visionzip.method)
        scores, drops = hidden_state_scores(self.config, context, hidden, self.language_model.norm, vision)
        context.remaining = [remaining - drop for remaining, drop in zip(context.remaining, drops, strict=True)]
        context.stages.append(compose(None, select_tokens(scores, context.prunable.to(hidden.device), drops)))

    def _after_layer_zero(self, layer: nn.Module, args: tuple, output: Any) -> None:
        context = self._current()
        if context is None or context.restore_cache is None:
            return
        context.restore_cache()
        context.restore_cache = None
        if output is not None:  # None: layer 0 raised (always_call), and that error is the one to see
            check_inflated(context.inflated, int(context.prunable.shape[1]))

    def _layer_pre_hook(
        self, layer: nn.Module, args: tuple, kwargs: dict[str, Any], stage: int, first: bool, index: int
    ) -> tuple[tuple, dict[str, Any]] | None:
        context = self._current()
        if context is None or context.mode == "off":
            return None
        if context.mode == "decode":
            return self._decode_inputs(layer, context, stage, args, kwargs, index)
        if first and stage == 0 and not context.stages and self.config.scoring in HIDDEN_STATE_SCORINGS:
            self._select_from_hidden(context, args[0] if args else kwargs["hidden_states"])
        if len(context.stages) <= stage:
            raise RuntimeError(
                f"FastV: the scoring layer of stage {stage} did not run before its first pruned layer (its attention "
                "never called the routed attention function: transformers may dispatch attention differently now)."
            )
        check_layer_call(layer, args, kwargs, self.internals.version, context.prunable.shape[1])
        selection = context.stages[stage]
        if selection.identity:
            return None
        if first and not selection.relative.identity:
            group = context.pool_group

            def reduce(hidden: torch.Tensor) -> torch.Tensor:
                merged = hidden if group is None else merge_tokens(hidden, group)
                return gather_tokens(merged, selection.relative.index)

            args, kwargs = map_hidden_states(args, kwargs, reduce)
        kwargs = dict(kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None or selection.has_slots:
            length = context.prunable.shape[1]
            kwargs["attention_mask"] = context.memoized(stage, mask, lambda m: prefill_mask(m, selection, length))
        if kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = context.memoized(
                stage,
                kwargs["position_embeddings"],
                lambda pair: tuple(gather_tokens(t, selection.index) for t in pair),
            )
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = context.memoized(
                stage, kwargs["position_ids"], lambda ids: gather_tokens(ids, selection.index, dim=ids.dim() - 1)
            )
        if index == 0 and (cache := cache_in(kwargs)) is not None:
            context.restore_cache = inflate_layer_zero(cache, selection, context.prunable.shape[1])
            context.inflated = cache
        return args, kwargs

    def _decode_inputs(
        self, layer: nn.Module, context: ForwardContext, stage: int, args: tuple, kwargs: dict[str, Any], index: int
    ) -> tuple[tuple, dict[str, Any]] | None:
        selection = context.decode.stages[stage]
        mask = kwargs.get("attention_mask")
        if index == 0 and not selection.identity:  # layer 0's cache spans the prompt: hide what the prefill dropped
            build = functools.partial(layer_zero_decode_mask, selection=selection, total=context.total_length,
                                      prefill_length=context.decode.prefill_length,
                                      query_length=context.query_length)  # fmt: skip
            return args, {**kwargs, "attention_mask": context.memoized(-1, mask, build)}  # -1: not a stage's
        if selection.identity or (mask is None and not selection.has_slots):
            return None  # every pruned row holds the same keys and nothing is masked: SDPA's defaults are right
        check_layer_call(layer, args, kwargs, self.internals.version, context.query_length)
        kwargs = dict(kwargs)
        total, queries = context.total_length, context.query_length
        build = functools.partial(decode_mask, state=context.decode, selection=selection, total=total,
                                  query_length=queries)  # fmt: skip
        kwargs["attention_mask"] = context.memoized(stage, mask, build)
        return args, kwargs


_FAILED: Any = object()  # the stack entry of a forward whose context could not be built (its pre-hook raised)
