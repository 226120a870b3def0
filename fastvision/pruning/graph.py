"""Which output channels of a network can be removed, and which must go together.

Channel pruning (AutoBot, arXiv 2111.09635; Fire-Together-Wire-Together, arXiv 2110.08232) needs to know, for every
channel a convolution produces, every place that channel is read. We trace the model with ``torch.fx`` and run the
graph once on a sample, following a *channel map* (one node id per channel) through every tensor:

- a Conv2d / Linear / ParameterNet ``DynamicConv`` (groups = 1) makes fresh channels and *consumes* its input's;
- a depthwise conv, BatchNorm, activations, pooling and dropout keep the map (a depthwise conv ties its output
  channel i to input channel i);
- ``x + y`` and ``x * y`` tie channel i of x to channel i of y (a residual connection: both must go together);
- ``cat`` along channels concatenates maps; a slice that keeps every channel is a no-op;
- anything else (a reshape mixing channels, a grouped conv, a real channel slice), the network's input and its
  output *freeze* the channels they touch.

Tied channels form a component (union-find). A component with no frozen channel can be removed whole: from each
producer's output, each BatchNorm and depthwise conv it passes, and each consumer's input. Convs, BatchNorms and
Linears are the only modules pruning edits, so a module called twice is frozen too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

PASS_THROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish, nn.Tanh, nn.LeakyReLU, nn.Identity,
    nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
PASS_THROUGH_FUNCTIONS = {
    torch.relu, torch.sigmoid, torch.tanh, nn.functional.relu, nn.functional.gelu, nn.functional.silu,
    nn.functional.hardsigmoid, nn.functional.hardswish, nn.functional.sigmoid, nn.functional.dropout,
    nn.functional.adaptive_avg_pool2d, nn.functional.max_pool2d, nn.functional.avg_pool2d,
}  # fmt: skip
PASS_THROUGH_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float"}
ELEMENTWISE = {"add", "mul", "sub", "__add__", "__mul__", "__sub__", "__iadd__", "__imul__"}


def find(parent: list[int], node: int) -> int:
    """Union-find's root of ``node``, halving the path as it goes."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def _is_dynamic_conv(module: nn.Module) -> bool:
    return type(module).__name__ == "DynamicConv" and hasattr(module, "routing")


def conv_shape(module: nn.Module) -> tuple[int, int, int, int]:
    """(in channels, out channels, groups, kernel elements) of a Conv2d or DynamicConv."""
    if _is_dynamic_conv(module):
        return module.in_chs, module.out_chs, module.groups, module.kernel**2
    return module.in_channels, module.out_channels, module.groups, module.weight[0, 0].numel()


@dataclass
class LayerCall:
    """One call of a conv or linear: what it reads and makes, and its output size (for the MAC count)."""

    name: str
    kind: str  # "conv" (groups 1), "depthwise", "grouped" (frozen), "linear"
    inputs: list[int]
    outputs: list[int]
    spatial: int  # output positions per sample (H·W; 1 for a linear on (B, C))
    kernel: int  # kernel elements (1 for a linear)
    groups: int = 1
    experts: int = 0  # ParameterNet's DynamicConv: expert kernels mixed per sample
    followed_by_batchnorm: str | None = None


@dataclass
class ChannelGraph:
    """The result of :func:`trace_channels`: layer calls, BatchNorm maps, and the channel components."""

    calls: dict[str, LayerCall]
    batchnorms: dict[str, list[int]]
    parent: list[int]
    frozen: set[int]
    components: dict[int, list[int]] = field(default_factory=dict)  # prunable root -> its channel nodes

    def root(self, node: int) -> int:
        return find(self.parent, node)

    @property
    def roots(self) -> list[int]:
        """The prunable components in a fixed order: position i of a keep vector is component ``roots[i]``."""
        return list(self.components)

    def component_index(self, nodes: list[int]) -> torch.Tensor:
        """Each channel's position in :attr:`roots`, or ``len(roots)`` (a constant 1) for a channel that stays."""
        position = {root: index for index, root in enumerate(self.components)}
        return torch.tensor([position.get(self.root(node), len(position)) for node in nodes], dtype=torch.long)

    def prunable(self, node: int) -> bool:
        return self.root(node) in self.components

    @property
    def prunable_layers(self) -> list[str]:
        return [name for name, call in self.calls.items() if any(self.prunable(n) for n in call.outputs)]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return _is_dynamic_conv(module) or super().is_leaf_module(module, qualified_name)


class _ChannelInterpreter(fx.Interpreter):
    """Runs the traced graph on real tensors and carries a channel map beside every tensor."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__(graph_module)
        self.parent: list[int] = []
        self.frozen: set[int] = set()
        self.maps: dict[fx.Node, list[int]] = {}
        self.calls: dict[str, LayerCall] = {}
        self.batchnorms: dict[str, list[int]] = {}
        self.seen_modules: set[str] = set()
        self.frozen_modules: set[str] = set()

    def fresh(self, count: int, frozen: bool = False) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        if frozen:
            self.frozen.update(range(start, start + count))
        return list(range(start, start + count))

    def root(self, node: int) -> int:
        return find(self.parent, node)

    def tie(self, first: list[int], second: list[int]) -> None:
        for a, b in zip(first, second, strict=True):
            root_a, root_b = self.root(a), self.root(b)
            if root_a != root_b:
                self.parent[root_a] = root_b

    def freeze(self, channels: list[int]) -> None:
        self.frozen.update(channels)

    def channel_map(self, argument: Any) -> list[int] | None:
        return self.maps.get(argument) if isinstance(argument, fx.Node) else None

    def run_node(self, node: fx.Node) -> Any:
        result = super().run_node(node)
        if isinstance(result, torch.Tensor) and result.dim() >= 2:
            self.maps[node] = self.channels_of(node, result)
        elif node.op != "output":  # a tensor leaves the tracked world (tuple, shape, scalar): freeze what it read
            for argument in node.all_input_nodes:
                if argument in self.maps:
                    self.freeze(self.maps[argument])
        return result

    def channels_of(self, node: fx.Node, result: torch.Tensor) -> list[int]:
        width = result.shape[1]
        inputs = [self.maps[arg] for arg in node.all_input_nodes if arg in self.maps]
        if node.op == "placeholder":
            return self.fresh(width, frozen=True)
        if node.op == "call_module":
            return self.module_channels(node, result, inputs)
        target = node.target
        name = getattr(target, "__name__", str(target))
        first = self.channel_map(node.args[0]) if node.args else None
        same_width = first is not None and len(first) == width
        if (target in PASS_THROUGH_FUNCTIONS or name in PASS_THROUGH_METHODS) and same_width:
            return first
        if name in {"mean", "amax", "sum"} and first and len(first) == width and self._reduces_space(node):
            return first
        if name == "flatten" and first and len(first) == width:
            return first  # (B, C, 1, 1) -> (B, C): the channels survive; a spatial flatten changes the width
        if name in ELEMENTWISE and len(inputs) == 2 and len(inputs[0]) == len(inputs[1]) == width:
            self.tie(inputs[0], inputs[1])
            return inputs[0]
        if name in ELEMENTWISE and len(inputs) == 1 and len(inputs[0]) == width:
            return inputs[0]  # a tensor and a scalar, or a broadcast (B, 1, ...) operand
        if name == "cat" and self._dim(node) == 1:
            maps = [self.channel_map(arg) for arg in node.args[0]]
            if all(m is not None for m in maps) and sum(len(m) for m in maps) == width:
                return [channel for m in maps for channel in m]
        if name == "getitem" and first and len(first) == width:
            return first  # a slice that keeps every channel
        for channels in inputs:
            self.freeze(channels)
        return self.fresh(width, frozen=True)

    @staticmethod
    def _dim(node: fx.Node) -> Any:
        return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)

    def _reduces_space(self, node: fx.Node) -> bool:
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = dims if isinstance(dims, (tuple, list)) else (dims,)
        return all(isinstance(d, int) and d in (2, 3, -1, -2) for d in dims)

    def module_channels(self, node: fx.Node, result: torch.Tensor, inputs: list[list[int]]) -> list[int]:
        name, module, width = str(node.target), self.fetch_attr(str(node.target)), result.shape[1]
        source = inputs[0] if inputs else self.fresh(1, frozen=True)
        if name in self.seen_modules:
            self.frozen_modules.add(name)
        self.seen_modules.add(name)
        if isinstance(module, nn.Conv2d) or _is_dynamic_conv(module):
            in_chs, out_chs, groups, kernel = conv_shape(module)
            spatial = result.shape[2] * result.shape[3]
            experts = module.routing.out_features if _is_dynamic_conv(module) else 0
            if groups == 1:
                outputs = self.fresh(out_chs)
                self.calls[name] = LayerCall(name, "conv", source, outputs, spatial, kernel, 1, experts)
            elif groups == in_chs == out_chs:
                outputs = source
                self.calls[name] = LayerCall(name, "depthwise", source, outputs, spatial, kernel, groups, experts)
            else:
                self.freeze(source)
                outputs = self.fresh(out_chs, frozen=True)
                self.calls[name] = LayerCall(name, "grouped", source, outputs, spatial, kernel, groups, experts)
            return outputs
        if isinstance(module, nn.Linear) and result.dim() == 2:
            outputs = self.fresh(module.out_features)
            self.calls[name] = LayerCall(name, "linear", source, outputs, 1, 1)
            return outputs
        if isinstance(module, nn.BatchNorm2d) and len(source) == width:
            self.batchnorms[name] = source
            producer = node.args[0]
            if isinstance(producer, fx.Node) and producer.op == "call_module" and str(producer.target) in self.calls:
                if len(producer.users) == 1:
                    self.calls[str(producer.target)].followed_by_batchnorm = name
            return source
        if isinstance(module, PASS_THROUGH_MODULES) and len(source) == width:
            return source
        if isinstance(module, nn.Flatten) and len(source) == width:
            return source
        for channels in inputs:
            self.freeze(channels)
        self.frozen_modules.add(name)
        return self.fresh(width, frozen=True)


def trace_channels(model: nn.Module, sample: torch.Tensor) -> ChannelGraph:
    """Trace ``model`` on ``sample`` (one batch of real input) and return its channel components."""
    try:
        graph = _Tracer().trace(model)
    except Exception as error:
        raise ValueError(f"channel pruning needs a model torch.fx can trace; tracing {type(model).__name__} failed: "
                         f"{error}") from error  # fmt: skip
    graph_module = fx.GraphModule(model, graph)
    interpreter = _ChannelInterpreter(graph_module)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = interpreter.run(sample)
    model.train(was_training)
    for node in graph_module.graph.nodes:
        if node.op == "output":
            for argument in node.all_input_nodes:
                interpreter.freeze(interpreter.maps.get(argument, []))
    for name in interpreter.frozen_modules:
        call = interpreter.calls.get(name)
        channels = interpreter.batchnorms.get(name, [])
        interpreter.freeze(channels + (call.inputs + call.outputs if call else []))
    result = ChannelGraph(interpreter.calls, interpreter.batchnorms, interpreter.parent, set())
    frozen_roots = {result.root(node) for node in interpreter.frozen}
    members: dict[int, list[int]] = defaultdict(list)
    produced = {node for call in result.calls.values() if call.kind in ("conv", "linear") for node in call.outputs}
    for node in produced:
        members[result.root(node)].append(node)
    result.frozen = frozen_roots
    result.components = {root: sorted(nodes) for root, nodes in members.items() if root not in frozen_roots}
    del output
    return result
