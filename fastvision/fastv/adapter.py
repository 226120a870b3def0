"""The small contract a model family implements so the FastV engine can patch it.

An adapter answers structural questions only (where the decoder layers are, which tokens are visual); every piece of
pruning logic lives in the engine, so a new family is a few lines in ``patches/token_reduction/<family>.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

SUPPORTED_ATTENTION = ("sdpa", "eager")


class VLMAdapter:
    """Base adapter for decoder-only VLMs whose language model is a ``layers`` stack of decoder layers.

    Subclasses set ``model_types`` and ``family`` and override what differs from the LLaVA layout.
    """

    model_types: tuple[str, ...] = ()
    family: str = ""
    text_backbones: tuple[str, ...] | None = None  # allowed text ``model_type`` values; None allows any

    # -- structure --
    def multimodal_model(self, model: nn.Module) -> nn.Module:
        """The module whose forward receives ``input_ids``, ``attention_mask`` and ``past_key_values``."""
        return getattr(model, "model", model)

    def language_model(self, model: nn.Module) -> nn.Module:
        return self.multimodal_model(model).language_model

    def text_config(self, model: nn.Module) -> Any:
        return self.language_model(model).config

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self.language_model(model).layers

    def attention_module(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn

    # -- inputs --
    def bind_inputs(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Name the forward arguments of :meth:`multimodal_model` (positional ones included)."""
        if not args:
            return kwargs
        signature = inspect.signature(module.forward)
        bound = dict(signature.bind_partial(*args, **kwargs).arguments)
        for name, parameter in signature.parameters.items():  # keywords the signature does not name stay top-level
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and isinstance(bound.get(name), dict):
                bound.update(bound.pop(name))
        return bound

    def visual_token_ids(self, model: nn.Module) -> dict[str, int]:
        """Placeholder token id of each visual modality the model has (``image``, ``video``)."""
        config = model.config
        ids = {}
        for kind in ("image", "video"):
            token = getattr(config, f"{kind}_token_id", None)
            if token is None:
                token = getattr(config, f"{kind}_token_index", None)
            if token is not None:
                ids[kind] = int(token)
        return ids

    def visual_masks(self, model: nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """(B, L) bool masks of each modality's placeholder positions in this forward (empty if no token ids).

        From ``input_ids`` when given; otherwise, as the models' own placeholder detection does, from the positions
        of ``inputs_embeds`` that equal a placeholder token's embedding.
        """
        input_ids = inputs.get("input_ids")
        token_ids = self.visual_token_ids(model)
        if input_ids is not None:
            return {kind: input_ids == token for kind, token in token_ids.items()}
        embeds = inputs.get("inputs_embeds")
        if embeds is None:
            return {}
        embedding = self.multimodal_model(model).get_input_embeddings()
        masks = {}
        for kind, token in token_ids.items():
            placeholder = embedding(torch.tensor(token, device=embeds.device)).to(embeds.dtype)
            masks[kind] = (embeds == placeholder).all(-1)
        return masks

    def image_grid(self, model: nn.Module) -> tuple[int, int] | None:
        """The (height, width) token grid of every image, row-major, where the family has a fixed one; else None.

        Only the spatial-pooling baseline (``scoring="pool"``) needs it, and is refused where it is None.
        """
        return None

    # -- checks --
    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError if this instance has a structure the engine cannot handle."""
        text_config = self.text_config(model)
        if self.text_backbones is not None and text_config.model_type not in self.text_backbones:
            raise ValueError(
                f"{self.family} with a {text_config.model_type!r} text model is not supported; "
                f"supported text models: {', '.join(self.text_backbones)}."
            )
        implementation = text_config._attn_implementation
        if implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"FastV supports the attention implementations {SUPPORTED_ATTENTION}, but the text model uses "
                f"{implementation!r}. Load the model with attn_implementation='sdpa'."
            )

    def check_config(self, model: nn.Module, config: Any) -> None:
        """Raise ValueError if this family cannot run ``config`` (e.g. a layer constraint of its own)."""
        if config.scoring == "pool" and self.image_grid(model) is None:
            raise ValueError(
                f"FastV scoring='pool' averages each image's tokens over its 2-D token grid, but {self.family} images "
                "have no fixed grid fastvision can read (tiles, newline tokens or native resolutions); it runs on "
                "LLaVA and Gemma 3. Use scoring 'last', 'mean', 'random' or 'stride'."
            )
