"""Intermediate-fusion attention for U-ViT, patched into an early-fusion model in place.

Hu et al., "An Intermediate Fusion ViT Enables Efficient Text-Image Alignment in Diffusion Models" (arXiv 2403.16530;
the authors' code is https://github.com/zizhao-hu/U-ViT, ``libs/uvit_t2i.py`` and ``libs/uvit_t2i_cross.py``):

- the first ``v`` and the last ``v`` image blocks see no text tokens (only the time token and the patches);
- ``c`` new text-only blocks process the text first (new parameters; ``unpatch`` removes them);
- the text joins only the middle blocks. ``conditioning="concat"``: joint self-attention over time, text and patch
  tokens, the text updated along the way and dropped before the last ``v`` blocks. ``conditioning="cross"``: the
  time and patch tokens are the only queries; the (layer-normalised) text only adds keys and values, through the
  block's own qkv weights, and is never updated.

The long skips pair in-block ``i`` with out-block ``depth/2 - 1 - i``; as the image-only blocks are symmetric, both
ends of every skip hold the same tokens. With ``v=0, c=0`` and concat the patched forward runs exactly the unpatched
operations (bit-identical output, tested).
"""

from __future__ import annotations

import types

import torch
from torch import nn

from fastvision.fusion.config import FusionConfig
from fastvision.handle import HANDLE_ATTRIBUTE, PatchHandle, set_attribute
from fastvision.uvit.model import Block, UViT, _init_weights

TEXT_BLOCKS_ATTRIBUTE = "fusion_text_blocks"


def check_fusion(model: nn.Module, config: FusionConfig) -> None:
    """Refuse a model that is not a U-ViT, or v and c beyond its depth, before anything changes."""
    if not isinstance(model, UViT):
        raise TypeError(
            "fusion='intermediate' applies to fastvision.uvit.UViT and diffusers UTransformer2DModel models, "
            f"got {type(model).__name__}."
        )
    if config.text_span is not None:
        raise ValueError(
            f"text_start={config.text_start} and text_tokens={config.text_tokens} are for diffusers' "
            "UTransformer2DModel; fastvision's U-ViT knows where its text is: leave them unset."
        )
    half = len(model.in_blocks)
    if config.v > half:
        raise ValueError(
            f"v={config.v} is out of range for a U-ViT of depth {2 * half}: allowed is 0 <= v <= {half} "
            "(v image-only blocks at each end; the mid block always sees the text)."
        )
    if config.c > 2 * half + 1:
        raise ValueError(f"c={config.c} is out of range: allowed is 0 <= c <= {2 * half + 1} (the model's blocks).")


def install_fusion(model: UViT, config: FusionConfig, handle: PatchHandle) -> None:
    """Convert ``model`` to intermediate fusion in place, recording every change in ``handle``.

    Called by ``fastvision.patch`` after :func:`check_fusion`; if anything fails, the caller replays ``handle``.
    """
    reference = model.mid_block
    text_blocks = nn.ModuleList(
        Block(model.config.embed_dim, model.config.num_heads, model.config.mlp_ratio, model.config.qkv_bias)
        for _ in range(config.c)
    )
    text_blocks.apply(_init_weights)
    parameter = next(reference.parameters())
    set_attribute(handle, model, TEXT_BLOCKS_ATTRIBUTE, text_blocks.to(parameter.device, parameter.dtype))
    set_attribute(handle, model, "forward", types.MethodType(intermediate_fusion_forward, model))


def cross_block(block: Block, image: torch.Tensor, text: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """``block`` with the time and patch tokens as queries and the text as extra keys and values only."""
    if block.skip_linear is not None:
        image = block.skip_linear(torch.cat([image, skip], dim=-1))
    attention, dim = block.attn, image.shape[-1]
    normed = block.norm1(torch.cat([image, text], dim=1))
    weight, bias = attention.qkv.weight, attention.qkv.bias
    query = nn.functional.linear(normed[:, : image.shape[1]], weight[:dim], None if bias is None else bias[:dim])
    key, value = nn.functional.linear(normed, weight[dim:], None if bias is None else bias[dim:]).chunk(2, dim=-1)
    out = nn.functional.scaled_dot_product_attention(
        attention.heads(query), attention.heads(key), attention.heads(value)
    )
    image = image + attention.proj(attention.merge(out))
    return image + block.mlp(block.norm2(image))


def intermediate_fusion_forward(
    self: UViT, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """The patched ``UViT.forward`` (bound to the instance by :func:`patch_fusion`)."""
    config: FusionConfig = getattr(self, HANDLE_ATTRIBUTE).config
    time_token, text, patches = self.embed(x, timesteps, context)
    count = text.shape[1]
    time_token = time_token + self.pos_embed[:, :1]
    text = text + self.pos_embed[:, 1 : 1 + count]
    patches = patches + self.pos_embed[:, 1 + count :]
    for block in getattr(self, TEXT_BLOCKS_ATTRIBUTE):
        text = block(text)
    blocks = [*self.in_blocks, self.mid_block, *self.out_blocks]
    joint = range(config.v, len(blocks) - config.v)  # the blocks that see the text
    cross = config.conditioning == "cross"
    tokens, has_text = torch.cat([time_token, patches], dim=1), False
    skips: list[torch.Tensor] = []
    for index, block in enumerate(blocks):
        skip = skips.pop() if block.skip_linear is not None else None
        if cross and index in joint:
            tokens = cross_block(block, tokens, text, skip)
        else:
            if index in joint and not has_text:  # the text joins, in U-ViT's token order
                tokens, has_text = torch.cat([tokens[:, :1], text, tokens[:, 1:]], dim=1), True
            elif index not in joint and has_text:  # and leaves before the last v blocks
                tokens, has_text = torch.cat([tokens[:, :1], tokens[:, 1 + count :]], dim=1), False
            tokens = block(tokens, skip)
        if index < len(self.in_blocks):
            skips.append(tokens)
    return self.decode(tokens[:, 1 + count :] if has_text else tokens[:, 1:])
