"""What AutoBot and FTWT share: input checks, the traced graph and MAC model, gate hooks, and a training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastvision.pruning.graph import ChannelGraph, trace_channels
from fastvision.pruning.macs import MacModel


def check_data(model: nn.Module, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` must be (inputs, integer labels) of equal length that the model accepts; refuse anything else."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise ValueError("data must be a pair of tensors (inputs, labels)")
    inputs, labels = data
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32) or len(labels) != len(inputs):
        raise ValueError(f"labels must be a 1-D integer tensor with one label per input; got shape "
                         f"{tuple(labels.shape)} ({labels.dtype}) for {len(inputs)} inputs")  # fmt: skip
    if len(inputs) < 2:
        raise ValueError(f"data needs at least 2 examples, got {len(inputs)}")
    was_training = model.training
    try:  # eval mode without gradients leaves the weights and the BatchNorm statistics as they were
        with torch.no_grad():
            logits = model.eval()(inputs[:2])
    except Exception as error:
        raise ValueError(f"data of shape {tuple(inputs.shape)} does not fit the model: {error}") from error
    finally:
        model.train(was_training)
    if logits.dim() != 2 or int(labels.max()) >= logits.shape[1] or int(labels.min()) < 0:
        low, high = int(labels.min()), int(labels.max())
        raise ValueError(f"labels must be class indices in [0, {logits.shape[-1]}) for the model's "
                         f"{tuple(logits.shape[1:])} logits; got [{low}, {high}]")  # fmt: skip
    return inputs, labels


def analyse(model: nn.Module, sample: torch.Tensor) -> tuple[ChannelGraph, MacModel, float]:
    """The channel graph, its MAC model (anchored to the measured count) and the model's measured MACs per input."""
    from fastvision.flops.counter import measure_flops

    graph = trace_channels(model, sample)
    if not graph.components:
        raise ValueError(f"{type(model).__name__} has no prunable convolution channels (every channel is tied to the "
                         "input, the output, or an operation that fixes its width)")  # fmt: skip
    was_training = model.training
    model.eval()
    with torch.no_grad():
        report, _ = measure_flops(lambda: model(sample[:1]))
    model.train(was_training)
    return graph, MacModel(graph, report.macs), float(report.macs)


def gate_points(graph: ChannelGraph) -> dict[str, torch.Tensor]:
    """Where a channel mask is applied: each BatchNorm's output, and each producer's output that no BatchNorm follows.

    Values: the component index of each channel (``num_components`` for a channel that cannot be pruned).
    """
    index, none = graph.component_index, len(graph.components)
    points = {name: index(channels) for name, channels in graph.batchnorms.items()}
    for name, call in graph.calls.items():
        if call.kind in ("conv", "linear") and call.followed_by_batchnorm is None:
            points[name] = index(call.outputs)
    return {name: idx for name, idx in points.items() if (idx < none).any()}


@contextmanager
def masked(model: nn.Module, points: dict[str, torch.Tensor], keep: Callable[[], torch.Tensor]) -> Iterator[None]:
    """Multiply each gate point's output by ``keep()`` (shape (..., components)), gathered per channel."""
    modules = dict(model.named_modules())

    def hook(index: torch.Tensor) -> Callable[..., torch.Tensor]:
        def apply(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            weights = keep()
            padded = torch.cat([weights, torch.ones(*weights.shape[:-1], 1, dtype=weights.dtype)], dim=-1)
            per_channel = padded[..., index]
            if per_channel.dim() == 1:  # one mask for the whole batch
                per_channel = per_channel[None]
            return output * per_channel.reshape(*per_channel.shape, *([1] * (output.dim() - per_channel.dim())))

        return apply

    handles = [modules[name].register_forward_hook(hook(index)) for name, index in points.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def fine_tune(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
              batch_size: int, generator: torch.Generator, progress: bool, description: str) -> None:  # fmt: skip
    """Plain cross-entropy training with AdamW and a cosine schedule, in place."""
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    model.train()
    for _ in tqdm(range(steps), desc=description, disable=not progress, leave=False):
        chosen = torch.randint(0, len(inputs), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(inputs[chosen]), labels[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = sum(
        (model(inputs[i : i + batch_size]).argmax(-1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(inputs), batch_size)
    )
    return correct / len(inputs)
