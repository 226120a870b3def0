"""VisionZip as a :class:`fastvision.methods.Method` on LLaVA (arXiv 2412.04467).

``fastvision.patch(model, VisionZipConfig(ratio=0.9))`` or ``fastvision.patch(model, method="visionzip", ratio=0.9)``.
The token-reduction engine prunes before the language model (layer 0, as for DivPrune); two more hooks feed it:

1. the attention of the vision-tower layer LLaVA takes its features from is routed through fastvision's scoring
   attention function, which reads the [CLS] row and the keys beside SDPA (no second attention pass);
2. a pre-hook on the projector merges each image's contextual tokens into their targets and records the kept set,
   which the engine's layer-0 pre-hook then applies (``engine.vision_scores``).

Each image keeps ``P - floor(ratio * P)`` of its ``P`` patches, as VisionZip budgets per image.

It needs a vision tower with a [CLS] token whose patches map one to one onto the image tokens: LLaVA with a CLIP
tower and the default feature strategy. Other families are refused at ``patch`` time.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import torch
from torch import nn

from fastvision.fastv.compat import has_new_media
from fastvision.fastv.config import dropped_count
from fastvision.fastv.method import check_fastv, install_fastv
from fastvision.fastv.pooling import _runs
from fastvision.fastv.scoring import route_scoring
from fastvision.handle import PatchHandle, set_attribute
from fastvision.methods import Method, register_method
from fastvision.visionzip.config import VisionZipConfig
from fastvision.visionzip.selection import cls_attention_and_keys, zip_image

KEYWORDS = ("ratio", "contextual_share")


def feature_attention(model: nn.Module) -> nn.Module:
    """The attention module of the vision layer whose output LLaVA projects, or a ValueError saying why not."""
    config = model.config
    if config.model_type != "llava":
        raise ValueError(
            f"VisionZip reads the [CLS] attention of a CLIP-style vision tower whose patches are the image tokens; "
            f"fastvision runs it on LLaVA ('llava'), not on {config.model_type!r}. Use FastV, DART or DivPrune there."
        )
    if config.vision_feature_select_strategy != "default":
        raise ValueError(
            f"VisionZip needs LLaVA's 'default' feature strategy (patches without the [CLS] token), got "
            f"{config.vision_feature_select_strategy!r}."
        )
    layer = config.vision_feature_layer
    tower = model.model.vision_tower
    encoder = getattr(getattr(tower, "vision_model", tower), "encoder", None)  # CLIPVisionModel, nested or flat
    layers = getattr(encoder, "layers", None)
    if not isinstance(layer, int) or layers is None:
        raise ValueError(
            f"VisionZip needs one vision feature layer of a CLIP encoder; got vision_feature_layer={layer!r} and a "
            f"{type(model.model.vision_tower).__name__} tower."
        )
    index = len(layers) + layer if layer < 0 else layer - 1  # hidden_states[i] is the output of layer i - 1
    if not 0 <= index < len(layers):
        raise ValueError(f"VisionZip: vision_feature_layer={layer} selects the embeddings, not a layer's output.")
    attention = layers[index].self_attn
    if getattr(tower.config, "model_type", None) != "clip_vision_model":
        raise ValueError(
            f"VisionZip reads the [CLS] attention of a CLIP vision tower, but this LLaVA's tower is "
            f"{tower.config.model_type!r} (SigLIP and others have no [CLS] token)."
        )
    if not hasattr(attention.config, "_attn_implementation_internal"):
        raise ValueError(f"VisionZip cannot route {type(attention).__name__}'s attention: its config has no "
                         "_attn_implementation_internal (this transformers version changed it).")  # fmt: skip
    return attention


def vision_eager_attention(attention: nn.Module) -> Any:
    """The tower's own eager attention function (what the routed attention delegates to under eager), or None."""
    eager = getattr(sys.modules[type(attention).__module__], "eager_attention_forward", None)
    if eager is None and attention.config._attn_implementation == "eager":
        raise ValueError(f"VisionZip: {type(attention).__module__} has no eager_attention_forward to delegate to.")
    return eager


def check_visionzip(model: nn.Module, config: VisionZipConfig) -> str:
    family = check_fastv(model, config)
    vision_eager_attention(feature_attention(model))
    return family


class VisionZipState(threading.local):
    """What the vision-tower hooks leave for the next prefill of this thread.

    transformers' ``generate`` encodes the images before it calls the forward (``mm_encoder_outputs``), so the
    tower's signals cannot wait for the forward's context: they are kept per thread until the layer-0 pre-hook of
    the next prefill takes them.
    """

    attention: tuple[torch.Tensor, torch.Tensor] | None = None  # the [CLS] row and keys of the last tower pass
    image_scores: torch.Tensor | None = None  # (images, P) kept patches of the last projector pass

    def take(self, image_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) scores of a prefill's image positions (``image_mask``), from the images the projector zipped last."""
        image_scores, self.image_scores = self.image_scores, None
        if image_scores is None:
            raise RuntimeError("VisionZip chooses the kept tokens in the vision tower, but no image passed through "
                               "it for this prefill; pass pixel_values (not inputs_embeds).")  # fmt: skip
        return place_image_scores(image_scores, image_mask)

    def clear(self) -> None:
        self.attention = self.image_scores = None


def install_visionzip(model: nn.Module, config: VisionZipConfig, handle: PatchHandle) -> Any:
    engine = install_fastv(model, config, handle)
    attention = feature_attention(model)
    state = VisionZipState()

    def observe(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: Any, scaling: float) -> None:
        state.attention = cls_attention_and_keys(query, key, scaling)

    route_scoring(handle, attention, observe, vision_eager_attention(attention))

    def zip_features(module: nn.Module, args: tuple) -> tuple | None:
        if state.attention is None:
            return None
        (attention_row, keys), state.attention = state.attention, None
        zipped, state.image_scores = zip_images(args[0], attention_row, keys, config)
        return (zipped, *args[1:])

    hook = model.model.multi_modal_projector.register_forward_pre_hook(zip_features)
    handle.record("remove VisionZip projector hook", hook.remove)

    # The tower's choice lives from the tower pass to the end of the forward that uses it: a forward without images
    # of its own (pixels, or generate's pre-encoded outputs) must not take an earlier call's, nor may a failed one.
    def forget_stale(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not has_new_media(engine.adapter.bind_inputs(module, args, kwargs)):
            state.clear()

    multimodal = engine.multimodal
    handle.record("remove VisionZip hook", multimodal.register_forward_pre_hook(forget_stale, with_kwargs=True).remove)
    after = multimodal.register_forward_hook(lambda module, args, output: state.clear(), always_call=True)
    handle.record("remove VisionZip hook", after.remove)
    set_attribute(handle, engine, "vision_scores", state.take)
    return engine


def zip_images(
    features: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, config: VisionZipConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zip each image of a (images, P, C) batch of tower features, each keeping ``P - floor(ratio * P)`` patches.

    Returns the projector's new input and (images, P) scores (2 dominant, 1 contextual, 0 dropped). The [CLS] row
    and keys include the [CLS] position first; LLaVA's default strategy has dropped it from ``features``.
    """
    patches = features.shape[1]
    kept = patches - dropped_count(config.ratio, patches)
    if kept == patches:
        return features, torch.full(features.shape[:2], 2.0, device=features.device)
    zipped, scores = features.clone(), []
    for image in range(features.shape[0]):
        zipped[image], _, image_scores = zip_image(features[image], attention[image, 1:], keys[image, 1:], kept,
                                                   config.contextual_count(kept))  # fmt: skip
        scores.append(image_scores)
    return zipped, torch.stack(scores)


def place_image_scores(image_scores: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """Spread (images, P) per-patch scores over a prefill's (B, L) image positions, images in sequence order."""
    images, patches = image_scores.shape
    scores = torch.zeros(image_mask.shape, dtype=torch.float32)
    runs = [(row, run) for row, mask in enumerate(image_mask.cpu().tolist())
            for run in _runs([position for position, flag in enumerate(mask) if flag])]  # fmt: skip
    placed = [(row, run[start : start + patches]) for row, run in runs for start in range(0, len(run), patches)]
    if any(len(run) % patches for _, run in runs) or len(placed) != images:
        raise RuntimeError(
            f"VisionZip zipped {images} image(s) of {patches} tokens, but this prefill has image-token runs of "
            f"{[len(run) for _, run in runs]}; the images the tower saw last are not this prompt's."
        )
    for image, (row, positions) in enumerate(placed):
        scores[row, torch.tensor(positions)] = image_scores[image].cpu()
    return scores.to(image_mask.device)


def visionzip_config_from_keywords(options: dict[str, Any]) -> VisionZipConfig:
    return VisionZipConfig(**options)


VISIONZIP = register_method(
    Method(
        name="VisionZip",
        config_type=VisionZipConfig,
        keywords=KEYWORDS,
        from_keywords=visionzip_config_from_keywords,
        check=check_visionzip,
        install=install_visionzip,
    )
)
