"""MACs of a traced network as a function of how much of each channel component is kept.

With keep weights in [0, 1] the count is differentiable (AutoBot's L_flops, arXiv 2111.09635); with 0/1 weights it
is the count of the physically pruned network; with per-sample 0/1 masks it is FTWT's per-input count (arXiv
2110.08232). Every conv and linear is counted as ``kernel · in/groups · out · positions`` (a ParameterNet
``DynamicConv`` adds its routing Linear and the per-sample mixing of its expert kernels), which is what
``fastvision.flops.counter.measure_flops`` counts on the same network (tested). Whatever else the network
multiplies (attention, say) is added as a constant measured once.
"""

from __future__ import annotations

import torch

from fastvision.pruning.graph import ChannelGraph


class MacModel:
    """``macs(keep)``: ``keep`` is a (components,) or (batch, components) tensor of keep weights."""

    def __init__(self, graph: ChannelGraph, measured_macs: float | None = None) -> None:
        self.graph = graph
        self.roots = graph.roots
        index = graph.component_index
        self.layers = [(call, index(call.inputs), index(call.outputs)) for call in graph.calls.values()]
        self.constant = 0.0
        if measured_macs is not None:
            self.constant = measured_macs - float(self.macs(torch.ones(len(self.roots))))

    @property
    def num_components(self) -> int:
        return len(self.roots)

    def macs(self, keep: torch.Tensor) -> torch.Tensor:
        keep = keep.double()  # float32 cannot count past 2^24 MACs exactly
        padded = torch.cat([keep, torch.ones(*keep.shape[:-1], 1, dtype=keep.dtype)], dim=-1)
        total = torch.zeros(keep.shape[:-1], dtype=keep.dtype)
        for call, inputs, outputs in self.layers:
            n_in, n_out = padded[..., inputs].sum(-1), padded[..., outputs].sum(-1)
            if call.kind == "conv":
                total = total + call.kernel * n_in * n_out * call.spatial
                if call.experts:  # routing Linear on the pooled input, then mixing the expert kernels
                    total = total + n_in * call.experts + call.experts * n_out * n_in * call.kernel
            elif call.kind == "depthwise":
                total = total + call.kernel * n_out * call.spatial
                if call.experts:
                    total = total + n_in * call.experts + call.experts * n_out * call.kernel
            elif call.kind == "grouped":
                total = total + call.kernel * len(call.inputs) * len(call.outputs) // call.groups * call.spatial
                if call.experts:
                    total = total + len(call.inputs) * call.experts
                    total = total + call.experts * len(call.outputs) * len(call.inputs) // call.groups * call.kernel
            else:  # linear
                total = total + n_in * n_out
        return total + self.constant
