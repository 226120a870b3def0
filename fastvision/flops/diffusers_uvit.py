"""Parameters and forward FLOPs of diffusers' U-ViT (``UTransformer2DModel``), early fusion and intermediate fusion.

As for fastvision's U-ViT (``flops/uvit.py``), the model is built on the meta device, patched with
:func:`fastvision.patch`, and FlopCounterMode counts one forward of one embedded sequence (matmuls, SDPA, 2 FLOPs per
multiply-add). Only the transformer is counted: UniDiffuserModel's input and output heads are not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fastvision.flops.counter import measure_flops


@dataclass(frozen=True)
class DiffusersUViTPreset:
    """A ``UTransformer2DModel`` config and the layout of the sequence it is called on: the tokens before the text,
    the text, and the tokens after it."""

    model: dict[str, Any]
    tokens_before_text: int
    text_tokens: int
    tokens_after_text: int
    source: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def inner_dim(self) -> int:
        return self.model["num_attention_heads"] * self.model["attention_head_dim"]


# UniDiffuser-v1 (Bao et al., arXiv 2303.06555; https://huggingface.co/thu-ml/unidiffuser-v1): the U-ViT settings of
# diffusers' scripts/convert_unidiffuser_to_diffusers.py ("big"), 64x64x4 latents in patches of 2 (1,024 tokens).
# UniDiffuserModel calls it on [t_img, t_text, data_type, text (77), clip_img, vae_img (1,024)].
DIFFUSERS_UVIT_PRESETS: dict[str, DiffusersUViTPreset] = {
    "unidiffuser-v1": DiffusersUViTPreset(
        model={
            "num_attention_heads": 24,
            "attention_head_dim": 64,
            "in_channels": 4,
            "out_channels": 4,
            "num_layers": 30,
            "dropout": 0.0,
            "norm_num_groups": 32,
            "attention_bias": False,
            "sample_size": 64,
            "patch_size": 2,
            "activation_fn": "gelu",
            "num_embeds_ada_norm": 1000,
            "norm_type": "layer_norm",
            "block_type": "unidiffuser",
            "pre_layer_norm": False,
            "norm_elementwise_affine": True,
            "use_patch_pos_embed": False,
            "ff_final_dropout": True,
        },
        tokens_before_text=3,
        text_tokens=77,
        tokens_after_text=1 + 32 * 32,
        source="thu-ml/unidiffuser-v1 (diffusers scripts/convert_unidiffuser_to_diffusers.py)",
    ),
}


def utransformer_class() -> Any:
    try:
        from diffusers.pipelines.deprecated.unidiffuser.modeling_uvit import UTransformer2DModel
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("diffusers' U-ViT needs diffusers: `pip install fastvision[diffusers]`.") from error
    return UTransformer2DModel


def utransformer_cost(preset: DiffusersUViTPreset, fusion: dict[str, Any] | None = None) -> dict[str, float]:
    """``{"parameters", "flops"}`` of one forward of ``preset``'s model, patched with ``fusion`` if given (the keyword
    arguments of ``fastvision.patch``; ``text_start``/``text_tokens`` come from the preset's layout)."""
    import fastvision

    length = preset.tokens_before_text + preset.text_tokens + preset.tokens_after_text
    with torch.device("meta"):
        model = utransformer_class()(**preset.model)
        hidden_states = torch.empty(1, length, preset.inner_dim)
    if fusion is not None:
        span = {"text_start": preset.tokens_before_text, "text_tokens": preset.text_tokens}
        fastvision.patch(model, **fusion, **span)
    report, _ = measure_flops(
        lambda: model(hidden_states, return_dict=False, hidden_states_is_embedding=True, unpatchify=False)
    )
    return {"parameters": sum(p.numel() for p in model.parameters()), "flops": report.total}


def utransformer_flops_table(name: str, fusion: dict[str, Any]) -> dict[str, Any]:
    """The unpatched (early-fusion) model against ``fusion``: parameters, FLOPs and the FLOPs ratio."""
    preset = DIFFUSERS_UVIT_PRESETS[name]
    early = utransformer_cost(preset)
    patched = utransformer_cost(preset, fusion)
    return {
        "model": name,
        "source": preset.source,
        "config": preset.model,
        "text_tokens": preset.text_tokens,
        "sequence": {
            "before_text": preset.tokens_before_text,
            "text": preset.text_tokens,
            "after_text": preset.tokens_after_text,
        },
        "flops_convention": "FLOPs = 2 x multiply-adds; one forward of the transformer on one embedded sequence",
        "early_fusion": early,
        "fusion": {**fusion, **patched, "flops_ratio": patched["flops"] / early["flops"]},
    }
