"""fastvision: plug-in acceleration for Hugging Face vision-language models.

``fastvision.patch(model, k=2, ratio=0.5)`` applies FastV visual-token pruning (arXiv 2403.06764) to a stock
transformers VLM in place; ``fastvision.unpatch(model)`` restores it exactly. The config's type picks the method:
``fastvision.patch(model, FastVConfig(...))``, ``fastvision.patch(model, DARTConfig(...))`` (DART, arXiv 2502.11494)
or ``fastvision.patch(uvit, FusionConfig(...))`` (intermediate fusion, arXiv 2403.16530).
``fastvision.swap_vision_tower`` and ``fastvision.reparameterize`` work with the bundled backbones
(``fastvision.backbones``). Importing this package does not import gradio, lm-eval or datasets.
"""

from fastvision.api import is_patched, kept_tokens, patch, patch_config, patched, unpatch
from fastvision.backbones.reparam import reparameterize
from fastvision.backbones.vlm import swap_vision_tower
from fastvision.dart.config import DARTConfig
from fastvision.divprune.config import DivPruneConfig
from fastvision.fastv.compat import TransformersCompatibilityError, UntestedTransformersWarning
from fastvision.fastv.config import FastVConfig
from fastvision.fastv.record import KeptTokens
from fastvision.fusion.config import FusionConfig
from fastvision.registry import supported_model_types
from fastvision.visionzip.config import VisionZipConfig

__version__ = "0.1.0"

__all__ = [
    "DARTConfig",
    "DivPruneConfig",
    "FastVConfig",
    "FusionConfig",
    "KeptTokens",
    "TransformersCompatibilityError",
    "UntestedTransformersWarning",
    "VisionZipConfig",
    "__version__",
    "is_patched",
    "kept_tokens",
    "patch",
    "patch_config",
    "patched",
    "reparameterize",
    "supported_model_types",
    "swap_vision_tower",
    "unpatch",
]
