"""Physical channel pruning: remove whole channel components from convs, BatchNorms and linears in place.

The result is an ordinary, smaller network: each weight is sliced, and each module's channel attributes are
rewritten, so its parameters and MACs really fall (AutoBot's "prune physically", arXiv 2111.09635).
"""

from __future__ import annotations

import torch
from torch import nn

from fastvision.pruning.graph import ChannelGraph, _is_dynamic_conv


def _kept(nodes: list[int], dropped: set[int], graph: ChannelGraph) -> torch.Tensor:
    return torch.tensor([i for i, node in enumerate(nodes) if graph.root(node) not in dropped], dtype=torch.long)


def _slice_parameter(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    tensor = getattr(module, name)
    if tensor is None:
        return
    sliced = tensor.detach().index_select(dim, index).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, sliced)


def _prune_dynamic(module: nn.Module, keep_in: torch.Tensor, keep_out: torch.Tensor, depthwise: bool) -> None:
    experts = module.weight.shape[0]
    per_out = 1 if depthwise else module.in_chs
    weight = module.weight.detach().reshape(experts, module.out_chs, per_out, module.kernel, module.kernel)
    weight = weight.index_select(1, keep_out)
    if not depthwise:
        weight = weight.index_select(2, keep_in)
    module.weight = nn.Parameter(weight.reshape(experts, -1).clone())
    _slice_parameter(module.routing, "weight", keep_in, 1)
    module.routing.in_features = len(keep_in)
    module.in_chs, module.out_chs = len(keep_in), len(keep_out)
    if depthwise:
        module.groups = len(keep_out)


def prune_channels(model: nn.Module, graph: ChannelGraph, dropped: set[int]) -> nn.Module:
    """Remove the components whose roots are in ``dropped`` from ``model`` (traced as ``graph``), in place."""
    unknown = dropped - set(graph.components)
    if unknown:
        raise ValueError(f"cannot drop components {sorted(unknown)[:5]}: they are not prunable")
    modules = dict(model.named_modules())
    for name, call in graph.calls.items():
        module = modules[name]
        keep_in, keep_out = _kept(call.inputs, dropped, graph), _kept(call.outputs, dropped, graph)
        if call.kind == "grouped":
            continue
        if len(keep_out) == 0:
            raise ValueError(f"pruning would remove every output channel of {name}")
        if _is_dynamic_conv(module):
            _prune_dynamic(module, keep_in, keep_out, depthwise=call.kind == "depthwise")
        elif isinstance(module, nn.Conv2d):
            _slice_parameter(module, "weight", keep_out, 0)
            if call.kind == "conv":
                _slice_parameter(module, "weight", keep_in, 1)
                module.in_channels = len(keep_in)
            else:
                module.in_channels = module.groups = len(keep_out)
            _slice_parameter(module, "bias", keep_out, 0)
            module.out_channels = len(keep_out)
        elif isinstance(module, nn.Linear):
            _slice_parameter(module, "weight", keep_out, 0)
            _slice_parameter(module, "weight", keep_in, 1)
            _slice_parameter(module, "bias", keep_out, 0)
            module.in_features, module.out_features = len(keep_in), len(keep_out)
    for name, channels in graph.batchnorms.items():
        module = modules[name]
        keep = _kept(channels, dropped, graph)
        for attribute in ("weight", "bias", "running_mean", "running_var"):
            _slice_parameter(module, attribute, keep, 0)
        module.num_features = len(keep)
    return model
