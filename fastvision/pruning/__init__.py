"""Channel pruning toward a MACs budget on any torch.fx-traceable CNN:

- :func:`autobot` (arXiv 2111.09635): learn gates on the frozen model, hit the MACs target, remove the channels
  physically, fine-tune;
- :func:`ftwt` (arXiv 2110.08232): per-input masks predicted from each layer's input, MACs counted per input.

``graph.trace_channels`` finds which channels can go and which must go together (residual connections).
"""

from fastvision.pruning.autobot import AutoBotResult, AutoBotSettings, autobot
from fastvision.pruning.ftwt import FTWTNetwork, FTWTSettings, ftwt
from fastvision.pruning.graph import ChannelGraph, trace_channels

__all__ = [
    "AutoBotResult",
    "AutoBotSettings",
    "ChannelGraph",
    "FTWTNetwork",
    "FTWTSettings",
    "autobot",
    "ftwt",
    "trace_channels",
]
