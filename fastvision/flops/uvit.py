"""Parameters and forward FLOPs of U-ViT configs, early fusion and intermediate fusion, counted on the meta device.

The model is built with no weights (``meta``), patched with :func:`fastvision.patch`, and FlopCounterMode counts the
real shapes of one forward (one image, a full text context): matmuls, SDPA and convolutions, 2 FLOPs per multiply-add.
"""

from __future__ import annotations

from typing import Any

import torch

from fastvision.flops.counter import measure_flops


def uvit_cost(config: Any, fusion: dict[str, Any] | None = None) -> dict[str, float]:
    """``{"parameters", "flops"}`` of one forward of a U-ViT with ``config``, patched with ``fusion`` if given
    (the keyword arguments of ``fastvision.patch``: fusion, v, c, conditioning)."""
    import fastvision
    from fastvision.uvit import UViT

    with torch.device("meta"):
        model = UViT(config)
        x = torch.empty(1, config.in_chans, config.image_size, config.image_size)
        timesteps = torch.empty(1)
        context = torch.empty(1, config.text_tokens, config.text_dim)
    if fusion is not None:
        fastvision.patch(model, **fusion)
    report, _ = measure_flops(lambda: model(x, timesteps, context))
    return {"parameters": sum(p.numel() for p in model.parameters()), "flops": report.total}


def uvit_flops_table(preset: str, fusion: dict[str, Any]) -> dict[str, Any]:
    """Early (concat) fusion, the unpatched U-ViT, against ``fusion``: parameters, FLOPs and the FLOPs ratio."""
    from fastvision.uvit import uvit_preset

    config = uvit_preset(preset)
    early = uvit_cost(config)
    patched = uvit_cost(config, fusion)
    return {
        "model": preset,
        "config": config.to_dict(),
        "text_tokens": config.text_tokens,
        "flops_convention": "FLOPs = 2 x multiply-adds; one forward, one image, the full text context",
        "early_fusion": early,
        "fusion": {**fusion, **patched, "flops_ratio": patched["flops"] / early["flops"]},
    }
