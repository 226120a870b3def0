"""The gated linear recurrence TRecViT runs over time: Griffin's Real-Gated Linear Recurrent Unit (RG-LRU).

De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models" (arXiv
2402.19427), section 2.4; TRecViT (Pătrăucean et al., arXiv 2412.14294) uses Griffin's recurrent block, from
google-deepmind/recurrentgemma, as its temporal mixer. Written from the paper's equations:

    r_t = σ(W_a x_t + b_a)            recurrence gate (block-diagonal W_a, one block per head)
    i_t = σ(W_x x_t + b_x)            input gate
    a_t = a^(c·r_t),  a = σ(Λ)        c = 8; computed as log a_t = -c · r_t · softplus(-Λ)
    h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x_t)

At the first frame of a clip the state is reset: h_0 = 0 and the sqrt(1 - a²) normalisation is skipped, as in
recurrentgemma. Λ is initialised so that a^c is uniform in [min_rad², max_rad²] (TRecViT: min_rad 0.5).

The recurrent block around it (Griffin's "recurrent block"): two branches of width ``lru_width``; one is
GeLU(Linear(x)), the other a Linear, a causal depthwise temporal convolution of width 4, then the RG-LRU; their
product goes through a Linear back to ``width``. Every piece is causal, so :class:`RecurrentBlock` can run a whole
clip at once or one frame at a time from a small state (the last 3 conv inputs and h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GATE_EXPONENT = 8.0  # Griffin's c


class BlockDiagonalLinear(nn.Module):
    """A Linear whose weight is block-diagonal: ``num_blocks`` independent (width/blocks)² maps, one per head."""

    def __init__(self, width: int, num_blocks: int) -> None:
        super().__init__()
        if width % num_blocks:
            raise ValueError(f"width {width} must be divisible by the number of blocks {num_blocks}")
        block = width // num_blocks
        self.num_blocks = num_blocks
        self.weight = nn.Parameter(torch.randn(num_blocks, block, block) / math.sqrt(block))
        self.bias = nn.Parameter(torch.zeros(num_blocks, block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (self.num_blocks, -1))
        return (torch.einsum("...hi,hij->...hj", blocks, self.weight) + self.bias).flatten(-2)


class LinearScan(torch.autograd.Function):
    """h_t = a_t ⊙ h_{t-1} + x_t over dim 1, with a hand-written backward that keeps only a and h.

    Autograd through a Python loop would save two (N, D) tensors per step plus a stacked copy; the backward of a
    linear recurrence is the same recurrence run in reverse: g_t = dL/dh_t + a_{t+1} ⊙ g_{t+1}, dL/dx_t = g_t,
    dL/da_t = g_t ⊙ h_{t-1}.
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, x: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
        outputs = torch.empty_like(x)
        state = initial
        for step in range(x.shape[1]):
            state = torch.addcmul(x[:, step], a[:, step], state)
            outputs[:, step] = state
        ctx.save_for_backward(a, outputs, initial)
        return outputs

    @staticmethod
    def backward(ctx: Any, grad_outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, outputs, initial = ctx.saved_tensors
        grad_x = torch.empty_like(grad_outputs)
        grad_a = torch.empty_like(a)
        carried = torch.zeros_like(initial)
        for step in reversed(range(grad_outputs.shape[1])):
            carried = grad_outputs[:, step] + carried
            grad_x[:, step] = carried
            grad_a[:, step] = carried * (outputs[:, step - 1] if step else initial)
            carried = carried * a[:, step]
        return grad_a, grad_x, carried


class RGLRU(nn.Module):
    """The Real-Gated Linear Recurrent Unit over the time axis of (N, T, width) sequences."""

    def __init__(self, width: int, num_heads: int, min_rad: float = 0.5, max_rad: float = 0.999) -> None:
        super().__init__()
        self.input_gate = BlockDiagonalLinear(width, num_heads)
        self.recurrence_gate = BlockDiagonalLinear(width, num_heads)
        a_to_the_c = torch.empty(width).uniform_(min_rad**2, max_rad**2)
        a = a_to_the_c ** (1.0 / GATE_EXPONENT)
        self.a_logit = nn.Parameter(torch.log(a) - torch.log1p(-a))  # Λ with σ(Λ) = a

    def decay_and_input(self, x: torch.Tensor, first_frame: torch.Tensor | bool) -> tuple[torch.Tensor, torch.Tensor]:
        """a_t and the normalised gated input for every position of ``x`` (all frames at once)."""
        log_a = -GATE_EXPONENT * torch.sigmoid(self.recurrence_gate(x)) * F.softplus(-self.a_logit)
        a = torch.exp(log_a)
        gated = x * torch.sigmoid(self.input_gate(x))
        multiplier = torch.sqrt(-torch.expm1(2 * log_a).clamp(max=0))  # sqrt(1 - a²), stable near a = 1
        if isinstance(first_frame, torch.Tensor):
            multiplier = torch.where(first_frame, torch.ones_like(multiplier), multiplier)
        elif first_frame:
            multiplier = torch.ones_like(multiplier)
        return a, gated * multiplier

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, T, width); ``state``: h before the first of these frames, or None at the start of a clip."""
        steps = x.shape[1]
        first = torch.zeros(steps, 1, dtype=torch.bool, device=x.device)
        if state is None:
            first[0] = True
            state = x.new_zeros(x.shape[0], x.shape[2])
        a, inputs = self.decay_and_input(x, first)
        outputs = LinearScan.apply(a, inputs, state)
        return outputs, outputs[:, -1]


class CausalTemporalConv(nn.Module):
    """A depthwise convolution over time that sees only the current and the ``width - 1`` previous frames."""

    def __init__(self, channels: int, width: int = 4) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(channels, channels, width, groups=channels)

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, T, C); ``history``: the last ``width - 1`` inputs before ``x`` (zeros at a clip's start).

        Returns the output and the history to carry into the next call.
        """
        if history is None:
            history = x.new_zeros(x.shape[0], self.width - 1, x.shape[2])
        padded = torch.cat([history, x], dim=1)
        out = self.conv(padded.transpose(1, 2)).transpose(1, 2)
        return out, padded[:, -(self.width - 1) :]


@dataclass
class RecurrentState:
    """What one recurrent block carries from frame to frame."""

    conv_history: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.zeros(width))  # recurrentgemma's convention: the gain is 1 + scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.scale)


class RecurrentBlock(nn.Module):
    """Pre-norm residual Griffin recurrent block over time: ``x + out(GeLU(W_y x) ⊙ RG-LRU(conv(W_x x)))``."""

    def __init__(self, width: int, lru_width: int, num_heads: int, conv_width: int = 4, min_rad: float = 0.5) -> None:
        super().__init__()
        self.norm = RMSNorm(width)
        self.gate_branch = nn.Linear(width, lru_width)
        self.recurrent_branch = nn.Linear(width, lru_width)
        self.conv = CausalTemporalConv(lru_width, conv_width)
        self.lru = RGLRU(lru_width, num_heads, min_rad=min_rad)
        self.out = nn.Linear(lru_width, width)

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        """``x``: (N, T, width), one sequence per spatial token; returns the output and the state after it."""
        state = state or RecurrentState()
        normed = self.norm(x)
        gate = F.gelu(self.gate_branch(normed), approximate="tanh")
        recurrent, history = self.conv(self.recurrent_branch(normed), state.conv_history)
        recurrent, hidden = self.lru(recurrent, state.hidden)
        return x + self.out(recurrent * gate), RecurrentState(history, hidden)
