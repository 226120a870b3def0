"""Intermediate-fusion attention for diffusers' U-ViT, ``UTransformer2DModel``, patched in place.

Hu et al., "An Intermediate Fusion ViT Enables Efficient Text-Image Alignment in Diffusion Models" (arXiv 2403.16530;
https://github.com/zizhao-hu/U-ViT). diffusers' ``UTransformer2DModel`` is UniDiffuser's U-ViT (Bao et al., arXiv
2303.06555; ``diffusers/pipelines/deprecated/unidiffuser/modeling_uvit.py``): ``num_layers // 2`` in-blocks, a
mid-block and as many out-blocks, each out-block first merging its in-block's output through a ``SkipBlock``. It is
an early-fusion model: the caller concatenates every token into one embedded sequence (UniDiffuserModel:
``[t_img, t_text, (data_type), text, clip_img, vae_img]``) and calls it with ``hidden_states_is_embedding=True``.
``FusionConfig.text_start`` and ``text_tokens`` say which positions of that sequence are the text.

The patch mirrors ``patches/fusion/uvit.py``:

- the first ``v`` and the last ``v`` blocks see every token but the text;
- ``c`` new text-only blocks, of the model's own block class and shape, process the text first (``unpatch`` removes
  them);
- ``conditioning="concat"``: the text joins the middle blocks' self-attention and leaves before the last ``v``;
  ``conditioning="cross"``: the other tokens are the only queries, and the text adds keys and values through each
  middle block's own ``attn1`` weights (a wrapper around its attention processor), never updated.

The output keeps the input's layout: the text positions hold the text as it left the last block that saw it, so a
caller that splits the output by position (as UniDiffuserModel does) keeps working. diffusers runs the mid-block
without the caller's keyword arguments; so does the patch. With ``v=0, c=0`` and concat the patched forward runs
exactly the unpatched operations (bit-identical, tested).

So the text positions of the output do not hold a text prediction (with ``cross`` they are the text blocks' output,
which never saw the image): UniDiffuser's text-to-image mode works, its image-to-text and joint modes do not.

Every diffusers internal this relies on is checked at ``patch`` time, so a diffusers release that changes them makes
``patch`` fail, never run the unpatched model silently.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import torch
from torch import nn

from fastvision.fusion.config import FusionConfig
from fastvision.handle import HANDLE_ATTRIBUTE, PatchHandle, set_attribute

TEXT_BLOCKS_ATTRIBUTE = "fusion_text_blocks"
MODEL_ATTRIBUTES = ("transformer_in_blocks", "transformer_mid_block", "transformer_out_blocks", "norm_out")
BLOCK_ATTRIBUTES = ("attn1", "attn2", "norm1", "pre_layer_norm", "use_ada_layer_norm")


def is_diffusers_uvit(model: nn.Module) -> bool:
    """True for a diffusers ``UTransformer2DModel`` (without importing diffusers when it is not loaded)."""
    return any(
        klass.__name__ == "UTransformer2DModel" and klass.__module__.startswith("diffusers.")
        for klass in type(model).__mro__
    )


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [
        *model.transformer_in_blocks,
        model.transformer_mid_block,
        *(o["block"] for o in model.transformer_out_blocks),
    ]


def check_fusion(model: nn.Module, config: FusionConfig) -> None:
    """Refuse what the patch cannot convert, before anything changes."""
    missing = [name for name in MODEL_ATTRIBUTES if not hasattr(model, name)]
    if missing or any(not {"skip", "block"} <= set(out) for out in getattr(model, "transformer_out_blocks", [])):
        raise RuntimeError(
            f"This diffusers UTransformer2DModel lacks {missing or 'skip/block out-blocks'}: fastvision's fusion patch "
            "was written against diffusers 0.42's modeling_uvit.py, and refuses rather than run the model unpatched."
        )
    for index, block in enumerate(_blocks(model)):
        absent = [name for name in BLOCK_ATTRIBUTES if not hasattr(block, name)]
        if absent or not callable(getattr(block.attn1, "processor", None)):
            raise RuntimeError(
                f"Block {index} ({type(block).__name__}) lacks {absent or 'attn1.processor'}: fastvision's fusion "
                "patch was written against diffusers 0.42's UniDiffuserBlock and UTransformerBlock."
            )
    blocks = _blocks(model)
    if any(block.attn2 is not None or getattr(block, "only_cross_attention", False) for block in blocks):
        raise ValueError(
            "This UTransformer2DModel conditions by cross-attention (cross_attention_dim="
            f"{model.config.get('cross_attention_dim')!r}); intermediate fusion converts the early-fusion layout, "
            "where the text is part of the input sequence (cross_attention_dim=None, as UniDiffuser builds it)."
        )
    if any(block.use_ada_layer_norm for block in blocks):
        raise ValueError(
            f"norm_type={model.config.get('norm_type')!r} (AdaLayerNorm) is not supported: diffusers runs the "
            "mid-block without a timestep. Allowed is norm_type='layer_norm'."
        )
    for index, block in enumerate(blocks):
        attention = block.attn1
        if isinstance(attention.processor, nn.Module):
            raise ValueError(
                f"Block {index}'s attn1 has a module as its processor ({type(attention.processor).__name__}); "
                "fusion wraps plain attention processors such as diffusers' AttnProcessor2_0."
            )
        normed = [name for name in ("group_norm", "spatial_norm", "norm_cross") if getattr(attention, name, None)]
        if normed:
            raise ValueError(
                f"Block {index}'s attn1 has {normed}, which would treat the text keys of conditioning='cross' "
                "unlike the block's own tokens; fusion supports plain self-attention blocks."
            )
    if config.text_span is None:
        raise ValueError(
            "A diffusers UTransformer2DModel takes the text inside its input sequence: pass text_start and "
            "text_tokens (UniDiffuser-v1: text_start=3, text_tokens=77; v0: text_start=2)."
        )
    half = len(model.transformer_in_blocks)
    if config.v > half:
        raise ValueError(
            f"v={config.v} is out of range for a UTransformer2DModel of num_layers={2 * half}: allowed is "
            f"0 <= v <= {half} (v text-free blocks at each end; the mid-block always sees the text)."
        )
    if config.c > 2 * half + 1:
        raise ValueError(f"c={config.c} is out of range: allowed is 0 <= c <= {2 * half + 1} (the model's blocks).")


class TextKeysProcessor:
    """A block's ``attn1`` processor with ``text`` appended to the keys and values (the queries stay the block's own
    tokens), for ``conditioning="cross"``. The patched forward sets ``text`` around the block's call; with none it is
    the wrapped processor."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.text: torch.Tensor | None = None
        # diffusers' Attention passes a processor only the keyword arguments its ``__call__`` names, read from the
        # instance: show it the wrapped processor's, so the caller's arguments reach it as they would unpatched.
        self.__call__ = wrapped.__call__

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.text is not None:
            encoder_hidden_states = torch.cat([hidden_states, self.text], dim=1)
        return self.wrapped(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )


def _text_block(model: nn.Module) -> nn.Module:
    """A new text-only block: a copy of the mid-block (the model's own block class and shape, self-attention only)
    with freshly initialised parameters."""
    block = copy.deepcopy(model.transformer_mid_block)
    for module in block.modules():
        if module is not block and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return block


def install_fusion(model: nn.Module, config: FusionConfig, handle: PatchHandle) -> None:
    """Convert ``model`` to intermediate fusion in place, recording every change in ``handle``."""
    parameter = next(model.transformer_mid_block.parameters())
    text_blocks = nn.ModuleList(_text_block(model) for _ in range(config.c)).to(parameter.device, parameter.dtype)
    text_blocks.train(model.training)
    set_attribute(handle, model, TEXT_BLOCKS_ATTRIBUTE, text_blocks)
    if config.conditioning == "cross":
        blocks = _blocks(model)
        for block in blocks[config.v : len(blocks) - config.v]:
            set_attribute(handle, block.attn1, "processor", TextKeysProcessor(block.attn1.processor))
    set_attribute(handle, model, "forward", types.MethodType(intermediate_fusion_forward, model))


def _unpatchify(model: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """``UTransformer2DModel.forward``'s own unpatchify step (tokens -> image)."""
    side = int(hidden_states.shape[1] ** 0.5)
    size, channels = model.patch_size, model.out_channels
    hidden_states = hidden_states.reshape(shape=(-1, side, side, size, size, channels))
    hidden_states = torch.einsum("nhwpqc->nchpwq", hidden_states)
    return hidden_states.reshape(shape=(-1, channels, side * size, side * size))


def intermediate_fusion_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    hidden_states_is_embedding: bool = False,
    unpatchify: bool = True,
) -> Any:
    """The patched ``UTransformer2DModel.forward``, with the unpatched signature."""
    config: FusionConfig = getattr(self, HANDLE_ATTRIBUTE).config
    span = config.text_span
    if not unpatchify and return_dict:
        raise ValueError(f"Cannot both define `unpatchify`: {unpatchify} and `return_dict`: {return_dict}.")
    if not hidden_states_is_embedding or hidden_states.dim() != 3 or hidden_states.shape[1] < span.stop:
        raise ValueError(
            "An intermediate-fusion UTransformer2DModel takes the embedded sequence with the text at positions "
            f"[{span.start}, {span.stop}) (hidden_states_is_embedding=True, hidden_states of shape (batch, tokens, "
            f"dim)); got hidden_states_is_embedding={hidden_states_is_embedding} and shape "
            f"{tuple(hidden_states.shape)}."
        )
    text = hidden_states[:, span]
    for text_block in getattr(self, TEXT_BLOCKS_ATTRIBUTE):
        text = text_block(text)
    tokens = torch.cat([hidden_states[:, : span.start], hidden_states[:, span.stop :]], dim=1)
    keywords = {
        "encoder_hidden_states": encoder_hidden_states,
        "timestep": timestep,
        "cross_attention_kwargs": cross_attention_kwargs,
        "class_labels": class_labels,
    }
    half = len(self.transformer_in_blocks)
    joint = range(config.v, 2 * half + 1 - config.v)  # the blocks that see the text
    cross, has_text = config.conditioning == "cross", False
    skips: list[torch.Tensor] = []
    for index, block in enumerate(_blocks(self)):
        if not cross and index in joint and not has_text:  # the text joins, at its place in the sequence
            tokens, has_text = torch.cat([tokens[:, : span.start], text, tokens[:, span.start :]], dim=1), True
        elif not cross and index not in joint and has_text:  # and leaves before the last v blocks
            text, has_text = tokens[:, span], False
            tokens = torch.cat([tokens[:, : span.start], tokens[:, span.stop :]], dim=1)
        if index > half:
            tokens = self.transformer_out_blocks[index - half - 1]["skip"](tokens, skips.pop())
        arguments = {} if index == half else keywords  # diffusers calls the mid-block with the tokens only
        if cross and index in joint:
            processor = block.attn1.processor
            processor.text = block.norm1(text) if block.pre_layer_norm else text  # as attn1 sees the block's tokens
            try:
                tokens = block(tokens, **arguments)
            finally:
                processor.text = None
        else:
            tokens = block(tokens, **arguments)
        if index < half:
            skips.append(tokens)
    if not has_text:  # put the text back at its positions, so the output keeps the input's layout
        tokens = torch.cat([tokens[:, : span.start], text, tokens[:, span.start :]], dim=1)
    output = self.norm_out(tokens)
    if unpatchify:
        output = _unpatchify(self, output)
    if not return_dict:
        return (output,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=output)
