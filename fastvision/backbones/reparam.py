"""``fastvision.reparameterize(model, inplace=False)``: fold every re-parameterisable block into its deployed form.

As in timm's ``reparameterize_model``: each module that has a ``reparameterize()`` method (RepMLP's locality
injection, vHeat's precomputed decay) converts itself; the model is deep-copied first unless ``inplace=True``, so the
training form survives for comparison.
"""

from __future__ import annotations

import copy

from torch import nn


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The deployed form of ``model`` (a copy unless ``inplace``); a model with nothing to fold comes back as is."""
    target = model if inplace else copy.deepcopy(model)
    for module in list(target.modules()):
        if module is not target and hasattr(module, "reparameterize"):
            module.reparameterize()
    return target
