"""Fire Together Wire Together (FTWT): per-input channel masks predicted from each layer's input.

Elkerdawy et al., "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask Prediction"
(CVPR 2022, arXiv 2110.08232; the authors' code is selkerdawy/FTWT, read for the target and the binariser). Each
prunable conv gets a predictor: global average pooling of the conv's *input* → a linear layer → one logit per output
filter. The hard mask is sigmoid(logit) > 0.5, with a straight-through gradient. Its training target, per input, is
the set of filters that carry a share ``threshold`` of the layer's activation mass: the spatial maximum of |output|
per filter, normalised to sum to 1, filters taken largest first until the running sum reaches the threshold. The
predictors learn that target with binary cross-entropy while the network fine-tunes with cross-entropy under the
masks; "decoupled" training (the paper's best) feeds the predictors a detached input, so the two losses do not
fight over the backbone.

Masks are applied after each conv's BatchNorm. Only convs whose channels are not tied to another producer's
(through a residual sum) are masked, because a tied channel cannot switch off for one branch alone. MACs are counted
per input: a masked filter is neither computed nor read by the next layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.pruning.common import analyse, check_data
from fastvision.pruning.graph import ChannelGraph
from fastvision.pruning.macs import MacModel


@dataclass(frozen=True)
class FTWTSettings:
    steps: int = 400
    lr: float = 1e-3
    predictor_lr: float = 1e-2
    mask_loss_weight: float = 1.0
    batch_size: int = 64
    decoupled: bool = True
    seed: int = 0
    progress: bool = False


class BinarizeSTE(torch.autograd.Function):
    """1 where the probability exceeds 0.5, else 0; the gradient passes straight through."""

    @staticmethod
    def forward(ctx: Any, probability: torch.Tensor) -> torch.Tensor:
        return (probability > 0.5).to(probability.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def mass_target(output: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) 0/1: the fewest filters whose normalised spatial-max mass reaches ``threshold``."""
    strength = output.detach().abs().amax(dim=(2, 3))
    share = strength / strength.sum(1, keepdim=True).clamp(min=1e-12)
    ordered, order = share.sort(dim=1, descending=True)
    before = ordered.cumsum(1) - ordered  # the mass of the stronger filters
    keep_sorted = (before < threshold).to(output.dtype)
    return torch.zeros_like(share).scatter(1, order, keep_sorted)


class FTWTNetwork(nn.Module):
    """A network with FTWT mask predictors; ``forward`` runs with hard per-input masks."""

    def __init__(self, network: nn.Module, graph: ChannelGraph, mac_model: MacModel, threshold: float,
                 decoupled: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.network, self.graph, self.mac_model = network, graph, mac_model
        self.threshold, self.decoupled = threshold, decoupled
        self.layers: dict[str, tuple[str, torch.Tensor]] = {}  # conv -> (its gate point, its component indices)
        predictors = {}
        for name, call in graph.calls.items():
            own = graph.component_index(call.outputs)
            if (call.kind != "conv" or call.followed_by_batchnorm is None or (own == len(graph.components)).any()
                    or any(len(graph.components[graph.root(n)]) != 1 for n in call.outputs)):  # fmt: skip
                continue
            self.layers[name] = (call.followed_by_batchnorm, own)
            predictors[name.replace(".", "_")] = nn.Linear(len(call.inputs), len(call.outputs))
        if not self.layers:
            raise ValueError(f"{type(network).__name__} has no conv followed by a BatchNorm whose channels are free "
                             "to switch off per input; FTWT has nothing to mask")  # fmt: skip
        self.predictors = nn.ModuleDict(predictors)
        modules = dict(network.named_modules())
        self._hooked = [(modules[name], modules[gate], name) for name, (gate, _) in self.layers.items()]
        self.last_masks: dict[str, torch.Tensor] = {}
        self.last_logits: dict[str, torch.Tensor] = {}
        self.last_targets: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handles = []
        self.last_masks, self.last_logits, self.last_targets = {}, {}, {}

        def predict(name: str) -> Any:
            def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                pooled = inputs[0].mean(dim=(2, 3))
                logits = self.predictors[name.replace(".", "_")](pooled.detach() if self.decoupled else pooled)
                self.last_logits[name] = logits
                self.last_masks[name] = BinarizeSTE.apply(torch.sigmoid(logits))

            return hook

        def apply(name: str) -> Any:
            def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
                if self.training:  # the targets only feed the training loss
                    self.last_targets[name] = mass_target(output, self.threshold)
                return output * self.last_masks[name][:, :, None, None]

            return hook

        for conv, gate, name in self._hooked:
            handles.append(conv.register_forward_pre_hook(predict(name)))
            handles.append(gate.register_forward_hook(apply(name)))
        try:
            return self.network(x)
        finally:
            for handle in handles:
                handle.remove()

    def mask_loss(self) -> torch.Tensor:
        losses = [F.binary_cross_entropy_with_logits(self.last_logits[name], self.last_targets[name])
                  for name in self.layers]  # fmt: skip
        return torch.stack(losses).mean()

    @torch.no_grad()
    def macs_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """MACs each input costs with its own masks: (B,)."""
        self.eval()
        self(x)
        keep = torch.ones(len(x), self.mac_model.num_components)
        for name, (_, components) in self.layers.items():
            keep[:, components] = self.last_masks[name]
        return self.mac_model.macs(keep)


def ftwt(model: nn.Module, threshold: float, data: Any, settings: FTWTSettings | None = None) -> FTWTNetwork:
    """Train FTWT mask predictors (and fine-tune a copy of ``model``) so that each input keeps the filters carrying
    ``threshold`` of each layer's activation mass; returns the masked network (``model`` itself is untouched)."""
    settings = settings or FTWTSettings()
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a share of the activation mass, in (0, 1]; got {threshold}")
    inputs, labels = check_data(model, data)
    network = copy.deepcopy(model)
    graph, mac_model, _ = analyse(network, inputs[:2])
    wrapped = FTWTNetwork(network, graph, mac_model, threshold, settings.decoupled)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW([
        {"params": wrapped.network.parameters(), "lr": settings.lr},
        {"params": wrapped.predictors.parameters(), "lr": settings.predictor_lr},
    ], weight_decay=1e-4)  # fmt: skip
    from tqdm.auto import tqdm

    wrapped.train()
    for _ in tqdm(range(settings.steps), desc="FTWT", disable=not settings.progress, leave=False):
        chosen = torch.randint(0, len(inputs), (settings.batch_size,), generator=generator)
        loss = F.cross_entropy(wrapped(inputs[chosen]), labels[chosen])
        loss = loss + settings.mask_loss_weight * wrapped.mask_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return wrapped.eval()
