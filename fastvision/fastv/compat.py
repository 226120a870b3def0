"""Every transformers internal the FastV engine relies on, resolved once at ``patch`` time.

transformers renames internals between minor releases (5.24 renamed the forward argument ``past_key_values`` to
``cache`` and the outputs' field with it). An engine that reads a name that no longer exists does not crash: it sees
``None`` and quietly runs unpatched. So the engine reads these names only through :class:`Internals`, which
:func:`resolve_internals` builds by inspecting the patched instance; if a name is missing or a call convention
changed, ``patch`` raises :class:`TransformersCompatibilityError` naming the version and what changed, and the model
stays as it was. A transformers version outside the tested range gets one :class:`UntestedTransformersWarning`.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

# The oldest and newest transformers minors CI runs the engine and family tests on (see .ci/run and pyproject's
# [tool.fastvision] table, which a test keeps equal to this).
TESTED_TRANSFORMERS: tuple[str, str] = ("5.19", "5.25")

CACHE_NAMES = ("cache", "past_key_values")  # newest first: 5.24 renamed the second to the first (a deprecated alias)
ENCODER_OUTPUTS_NAME = "mm_encoder_outputs"  # pre-encoded images that generate passes instead of pixel values
LAYER_ARGUMENTS = ("attention_mask", "position_embeddings")  # what the layer pre-hooks gather, passed by keyword
ATTENTION_ARGUMENTS = ("module", "query", "key", "value", "attention_mask")  # transformers' attention-function call


class TransformersCompatibilityError(RuntimeError):
    """A transformers internal that FastV relies on is missing or changed; ``patch`` raises it instead of running."""


class UntestedTransformersWarning(UserWarning):
    """The installed transformers is outside the range of minors fastvision's CI has run."""


@dataclass(frozen=True)
class Internals:
    """The resolved names and functions of one patched model's transformers internals."""

    version: str
    cache_argument: str  # the multimodal forward's name for the KV cache ("cache" or "past_key_values")
    eager_attention: Callable[..., Any] | None  # the attention module's eager function (needed with eager only)

    @property
    def cache_names(self) -> tuple[str, ...]:
        """Names the forward takes its cache under: the resolved one, and the old one where it is a deprecated alias.

        Only these: on a release that does not know ``cache``, a ``cache=`` keyword would be ignored by the model, so
        reading it would misclassify a fresh forward as a decode step.
        """
        if self.cache_argument == CACHE_NAMES[0]:
            return CACHE_NAMES
        return (self.cache_argument,)

    def cache_of(self, inputs: dict[str, Any]) -> Any:
        """The cache a forward received, under its current name or the deprecated alias."""
        for name in self.cache_names:
            if inputs.get(name) is not None:
                return inputs[name]
        return None

    def classify_cache(self, inputs: dict[str, Any]) -> Any:
        """The forward's KV cache; raises if a cache arrives in a form or under a name the engine does not know."""
        from transformers import Cache

        cache = self.cache_of(inputs)
        if cache is not None and not isinstance(cache, Cache):
            raise RuntimeError(
                "FastV could not classify this forward as a prefill or a decode step: its cache is a "
                f"{type(cache).__name__}, not a transformers Cache. Pass a DynamicCache (or none)."
            )
        stray = sorted(
            name for name, value in inputs.items() if isinstance(value, Cache) and name not in self.cache_names
        )
        if stray:
            raise RuntimeError(
                f"FastV could not classify this forward as a prefill or a decode step: it received a cache as {stray}, "
                f"a name fastvision does not know (transformers {self.version} passes "
                f"{self.cache_argument!r}). Update fastvision or use a tested transformers."
            )
        return cache

    def output_cache(self, output: Any) -> Any:
        """The cache a forward returned: the output's field of the resolved name, or the Cache in a tuple output."""
        from transformers import Cache

        if isinstance(output, tuple):  # return_dict=False (a ModelOutput is a dict, not a tuple)
            return next((item for item in output if isinstance(item, Cache)), None)
        return getattr(output, self.cache_argument, None)


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def is_tested_version(version: str) -> bool:
    oldest, newest = TESTED_TRANSFORMERS
    return _minor(oldest) <= _minor(version) <= _minor(newest)


def warn_if_untested(version: str | None = None) -> None:
    """One warning, at patch time, when transformers is outside the tested range (a warning, not an error)."""
    version = transformers_version() if version is None else version
    if not is_tested_version(version):
        oldest, newest = TESTED_TRANSFORMERS
        warnings.warn(
            f"fastvision was tested with transformers {oldest} to {newest}, but {version} is installed. patch() "
            "checks every transformers internal it relies on and raises if one changed, but outputs on this version "
            "have not been verified by fastvision's tests.",
            UntestedTransformersWarning,
            stacklevel=3,
        )


def _fail(version: str, what: str, detail: str) -> TransformersCompatibilityError:
    oldest, newest = TESTED_TRANSFORMERS
    return TransformersCompatibilityError(
        f"fastvision cannot patch this model with transformers {version}: {what} {detail}. fastvision was tested "
        f"with transformers {oldest} to {newest}; install a version in that range "
        f"(pip install 'transformers>={oldest},<{_next_minor(newest)}') or a fastvision release that supports "
        f"{version}."
    )


def _next_minor(version: str) -> str:
    major, minor = _minor(version)
    return f"{major}.{minor + 1}"


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    """The named parameters of ``function``; ``inspect`` follows functools.wraps (transformers' deprecate_kwarg)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p for p in parameters if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _attention_registry(version: str) -> None:
    try:
        from transformers import AttentionInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError as exc:
        raise _fail(version, "the attention-function registry", f"could not be imported ({exc})") from exc
    if not callable(getattr(AttentionInterface, "register", None)):
        raise _fail(version, "transformers.AttentionInterface", "has no register()")
    if not callable(getattr(ALL_ATTENTION_FUNCTIONS, "get_interface", None)):
        raise _fail(version, "ALL_ATTENTION_FUNCTIONS", "has no get_interface()")
    if "sdpa" not in ALL_ATTENTION_FUNCTIONS:
        raise _fail(version, "ALL_ATTENTION_FUNCTIONS", "has no 'sdpa' entry")
    names = [p.name for p in _parameters(ALL_ATTENTION_FUNCTIONS["sdpa"])][: len(ATTENTION_ARGUMENTS)]
    if tuple(names) != ATTENTION_ARGUMENTS:
        raise _fail(
            version, "the attention-function call convention", f"changed: sdpa takes {names}, expected "
            f"{list(ATTENTION_ARGUMENTS)} first",
        )  # fmt: skip


def _cache_api(version: str) -> None:
    try:
        from transformers import Cache, DynamicCache  # noqa: F401
    except ImportError as exc:
        raise _fail(version, "the KV cache classes", f"could not be imported ({exc})") from exc
    names = [p.name for p in _parameters(DynamicCache.get_seq_length)]
    if "layer_idx" not in names:
        raise _fail(version, "DynamicCache.get_seq_length", f"takes {names}, without the per-layer 'layer_idx'")


def _multimodal_cache_argument(version: str, module: nn.Module) -> str:
    names = {p.name for p in _parameters(module.forward)}
    missing = [name for name in ("input_ids", "attention_mask", "inputs_embeds") if name not in names]
    if missing:
        raise _fail(version, f"{type(module).__name__}.forward", f"has no argument(s) {missing}")
    for name in CACHE_NAMES:
        if name in names:
            return name
    raise _fail(
        version, f"{type(module).__name__}.forward", f"takes its KV cache under none of the names {list(CACHE_NAMES)}"
    )


def _decoder_layer(version: str, layer: nn.Module) -> None:
    parameters = _parameters(layer.forward)
    names = [p.name for p in parameters]
    if not names or names[0] != "hidden_states":
        raise _fail(version, f"{type(layer).__name__}.forward", f"takes {names}; expected hidden_states first")
    missing = [name for name in LAYER_ARGUMENTS if name not in names]
    if missing:
        raise _fail(
            version, f"the decoder layer {type(layer).__name__}.forward",
            f"has no argument(s) {missing} (it takes {names}); FastV gathers them for the kept tokens",
        )  # fmt: skip


def _attention_module(version: str, module: nn.Module, implementation: str) -> Callable[..., Any] | None:
    config = getattr(module, "config", None)
    if config is None or not hasattr(type(config), "_attn_implementation"):
        raise _fail(version, f"{type(module).__name__}", "has no config with an _attn_implementation")
    if not hasattr(config, "_attn_implementation_internal"):
        raise _fail(version, f"{type(module).__name__}.config", "has no _attn_implementation_internal to route")
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if implementation == "eager" and eager is None:
        raise _fail(version, f"{type(module).__module__}", "has no eager_attention_forward to delegate to")
    if not hasattr(module, "scaling"):
        raise _fail(version, f"{type(module).__name__}", "has no scaling attribute")
    return eager


def resolve_internals(
    multimodal: nn.Module, layers: list[nn.Module], attention_modules: list[nn.Module], implementation: str
) -> Internals:
    """Check every internal the engine uses on this instance; raise TransformersCompatibilityError if one changed."""
    version = transformers_version()
    _attention_registry(version)
    _cache_api(version)
    cache_argument = _multimodal_cache_argument(version, multimodal)
    for layer in layers:
        _decoder_layer(version, layer)
    eager = None
    for module in attention_modules:
        eager = _attention_module(version, module, implementation)
    return Internals(version, cache_argument, eager)


def has_new_media(inputs: dict[str, Any]) -> bool:
    """Pixels, or pre-encoded media (``mm_encoder_outputs``, what generate passes since 5.x), in a forward's inputs."""
    if any(key.startswith("pixel_values") and value is not None for key, value in inputs.items()):
        return True
    encoded = inputs.get(ENCODER_OUTPUTS_NAME)
    return bool(encoded) and any(value is not None for value in encoded.values())


def check_layer_call(layer: nn.Module, args: tuple, kwargs: dict[str, Any], version: str, length: int) -> None:
    """Raise if the decoder loop calls a layer in a way the hooks would silently misread.

    The hooks gather the hidden states (the only positional argument) and the keyword mask and RoPE tables; a mask
    or table passed positionally, or a layer that computes its own rotary phases, would escape the gather. The RoPE
    tables must be per-token ``(B|1, length, head_dim)``: releases before 5.19 passed Qwen-VL's M-RoPE as
    ``(3, B, L, head_dim)``, which a sequence-axis gather would silently misread for a batch of three.
    """
    if len(args) > 1 or "position_embeddings" not in kwargs:
        raise TransformersCompatibilityError(
            f"FastV: transformers {version} calls {type(layer).__name__} with {len(args)} positional argument(s) and "
            f"keywords {sorted(kwargs)}; the engine needs the hidden states alone positionally and attention_mask "
            "and position_embeddings by keyword. This transformers version changed the decoder loop."
        )
    cos = kwargs["position_embeddings"][0]
    if cos.dim() != 3 or cos.shape[1] != length:
        raise TransformersCompatibilityError(
            f"FastV: transformers {version} passes {type(layer).__name__} RoPE tables of shape {tuple(cos.shape)}; "
            f"the engine gathers per-token tables of shape (batch, {length}, head_dim). This transformers version "
            "changed how rotary embeddings reach the decoder layers."
        )
