"""Bundled efficient vision backbones behind one timm-style contract (see ``base.py``), created by name::

    from fastvision.backbones import create_backbone, list_backbones
    model = create_backbone("cvt_13", num_classes=10)

The architecture files are imported on first use of the registry.
"""

from fastvision.backbones.base import Backbone, FeatureExtractor
from fastvision.backbones.registry import backbone_modality, create_backbone, list_backbones, register_backbone
from fastvision.backbones.reparam import reparameterize

__all__ = [
    "Backbone",
    "FeatureExtractor",
    "backbone_modality",
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "reparameterize",
]
