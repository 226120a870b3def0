"""AutoBot: learn which channels to keep for a MACs target, prune them physically, fine-tune.

Castells and Yeom, "Automatic Neural Network Pruning that Efficiently Preserves the Model Accuracy" (arXiv
2111.09635; the authors' code is nota-github/autobot_AAAI23, read for its defaults). On the *frozen* model, every
prunable channel component (``graph.py``) gets a gate λ = sigmoid(α), initialised at 0.9 and applied after each
BatchNorm (or conv) of the component. Only the gates train, for ``gate_steps`` batches, on

    CE + β·L_flops + γ·L_bool,   L_flops = (F − T)/(F_max − T) if F > T else 1 − F/T,   L_bool = mean |λ − round(λ)|

where F is the MAC count with the current gates (differentiable, ``macs.py``), T the target and F_max the
unpruned count. Then a global threshold on λ is bisected so that the channels above it make a network as close to
T as one component allows (each conv keeps at least one channel), those channels are removed physically
(``surgery.py``), and the smaller network is fine-tuned. Defaults follow the authors' code: 200 batches, lr 0.6,
β 6, γ 0.4 (the optimiser here is Adam).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.pruning.common import analyse, check_data, fine_tune, gate_points, masked
from fastvision.pruning.graph import ChannelGraph
from fastvision.pruning.macs import MacModel
from fastvision.pruning.surgery import prune_channels


@dataclass(frozen=True)
class AutoBotSettings:
    gate_steps: int = 200
    gate_lr: float = 0.6
    beta: float = 6.0
    gamma: float = 0.4
    initial_gate: float = 0.9
    batch_size: int = 64
    finetune_steps: int = 300
    finetune_lr: float = 1e-3
    seed: int = 0
    progress: bool = False


@dataclass
class AutoBotResult:
    model: nn.Module  # the pruned, fine-tuned network (the input model is never modified)
    macs_before: float
    macs_after: float  # measured on the pruned network
    target_macs: float
    threshold: float
    params_before: int
    params_after: int
    kept_components: int
    total_components: int
    gate_history: list[dict[str, float]] = field(default_factory=list)


def flops_loss(macs: torch.Tensor, target: float, full: float) -> torch.Tensor:
    """AutoBot's L_flops: how far above the target, normalised, or how far below it."""
    return (macs - target) / (full - target) if macs > target else 1 - macs / target


def _at_least_one(keep: torch.Tensor, gates: torch.Tensor, graph: ChannelGraph, mac_model: MacModel) -> torch.Tensor:
    """``keep``, plus the highest-gated component of any layer that would be left with no output channel."""
    keep = keep.clone()
    for call in graph.calls.values():
        if call.kind not in ("conv", "linear"):
            continue
        own = graph.component_index(call.outputs).tolist()
        if own and max(own) < mac_model.num_components and keep[own].sum() == 0:
            keep[max(own, key=lambda i: gates[i])] = 1.0
    return keep


def _bisect(gates: torch.Tensor, target: float, graph: ChannelGraph, mac_model: MacModel) -> tuple[float, torch.Tensor]:
    """Drop the components with the lowest gates, as many as brings the network closest to ``target`` MACs.

    This is the global threshold on λ, with ties between equal gates broken by order, so the count can move one
    component at a time: MACs fall monotonically with the number dropped, and a bisection over that number finds the
    closest. Returns the threshold (the largest dropped gate) and the 0/1 keep vector.
    """
    order = torch.argsort(gates, stable=True)

    def keep_lowest_dropped(count: int) -> torch.Tensor:
        keep = torch.ones_like(gates)
        keep[order[:count]] = 0.0
        return _at_least_one(keep, gates, graph, mac_model)

    low, high = 0, len(gates)  # MACs(low) >= target > MACs(high) once the search settles
    while high - low > 1:
        middle = (low + high) // 2
        if float(mac_model.macs(keep_lowest_dropped(middle))) >= target:
            low = middle
        else:
            high = middle
    candidates = [(abs(float(mac_model.macs(keep_lowest_dropped(count))) - target), count) for count in (low, high)]
    count = min(candidates)[1]
    threshold = float(gates[order[count - 1]]) if count else 0.0
    return threshold, keep_lowest_dropped(count)


def autobot(model: nn.Module, target_macs: float, data: Any, settings: AutoBotSettings | None = None) -> AutoBotResult:
    """Prune ``model`` to ``target_macs`` multiply-adds per input; ``data`` is (inputs, labels) to learn from."""
    settings = settings or AutoBotSettings()
    inputs, labels = check_data(model, data)
    work = copy.deepcopy(model).eval()
    graph, mac_model, full = analyse(work, inputs[:2])
    if not 0 < target_macs < full:
        raise ValueError(f"target_macs must be in (0, {full:,.0f}) (the model's MACs per input), got {target_macs:,}")
    nothing = torch.zeros(mac_model.num_components)
    smallest = float(mac_model.macs(_at_least_one(nothing, nothing, graph, mac_model)))
    if target_macs < smallest:
        raise ValueError(f"target_macs {target_macs:,.0f} is below {smallest:,.0f}, the fewest MACs channel pruning "
                         "can reach on this model (one channel left per layer)")  # fmt: skip
    generator = torch.Generator().manual_seed(settings.seed)
    initial = math.log(settings.initial_gate / (1 - settings.initial_gate))
    alpha = nn.Parameter(torch.full((mac_model.num_components,), initial))
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam([alpha], lr=settings.gate_lr)
    history = []
    from tqdm.auto import tqdm

    with masked(work, gate_points(graph), lambda: torch.sigmoid(alpha)):
        for step in tqdm(range(settings.gate_steps), desc="AutoBot gates", disable=not settings.progress, leave=False):
            chosen = torch.randint(0, len(inputs), (settings.batch_size,), generator=generator)
            gates = torch.sigmoid(alpha)
            macs = mac_model.macs(gates)
            cross_entropy = F.cross_entropy(work(inputs[chosen]), labels[chosen])
            boolean = (gates - gates.round()).abs().mean()
            loss = cross_entropy + settings.beta * flops_loss(macs, target_macs, full) + settings.gamma * boolean
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 20 == 0 or step == settings.gate_steps - 1:
                history.append({"step": step, "cross_entropy": cross_entropy.item(), "macs": macs.item(),
                                "boolean": boolean.item()})  # fmt: skip
    gates = torch.sigmoid(alpha.detach())
    threshold, keep = _bisect(gates, target_macs, graph, mac_model)
    dropped = {root for root, kept in zip(mac_model.roots, keep.tolist(), strict=True) if not kept}
    pruned = prune_channels(copy.deepcopy(model).eval(), graph, dropped)
    fine_tune(pruned, inputs, labels, settings.finetune_steps, settings.finetune_lr, settings.batch_size, generator,
              settings.progress, "AutoBot fine-tuning")  # fmt: skip
    from fastvision.flops.counter import measure_flops

    with torch.no_grad():
        report, _ = measure_flops(lambda: pruned(inputs[:1]))
    return AutoBotResult(
        model=pruned, macs_before=full, macs_after=float(report.macs), target_macs=float(target_macs),
        threshold=threshold, params_before=sum(p.numel() for p in model.parameters()),
        params_after=sum(p.numel() for p in pruned.parameters()), kept_components=int(keep.sum()),
        total_components=mac_model.num_components, gate_history=history,
    )  # fmt: skip
