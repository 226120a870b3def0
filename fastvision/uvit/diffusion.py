"""ε-prediction diffusion for U-ViT: the noise schedule, the training loss and a DDIM sampler.

The schedule is Stable Diffusion's (linear in sqrt β from 0.00085 to 0.012 over 1000 steps), which U-ViT's
text-to-image models use (github.com/baofff/U-ViT).
The sampler is DDIM (Song et al., "Denoising Diffusion Implicit Models",
ICLR 2021, arXiv 2010.02502) with η = 0, optionally with classifier-free guidance (Ho & Salimans, arXiv 2207.12598).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

NoisePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱ_t (cumulative product of 1 - β) for t = 0..steps-1."""

    alphas_cumprod: torch.Tensor

    @classmethod
    def stable_diffusion(cls, steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> NoiseSchedule:
        if steps < 2 or not 0 < beta_start < beta_end < 1:
            raise ValueError(f"Need steps >= 2, 0 < beta_start < beta_end < 1; got {steps}, {beta_start}, {beta_end}.")
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1 - betas, dim=0))

    @property
    def steps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε."""
        alpha = self.alphas_cumprod.to(x0.device)[timesteps].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise


def diffusion_loss(
    model: NoisePredictor,
    x0: torch.Tensor,
    context: torch.Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    min_snr_gamma: float | None = None,
    x0_weight_cap: float | None = None,
    x0_weight_floor: float | None = None,
) -> torch.Tensor:
    """Mean squared error of the predicted noise at uniformly drawn timesteps.

    ``min_snr_gamma`` weights each sample by min(SNR, γ) / SNR (Hang et al., "Efficient Diffusion Training via Min-SNR
    Weighting Strategy", arXiv 2303.09556), which stops the easy low-noise steps from dominating. ``x0_weight_cap``
    weights by min(1/SNR, cap): the ε error turned into an x_0 error, so the high-noise steps, where the layout is
    decided, count in proportion to what they get wrong in the image. ``x0_weight_floor`` keeps that weight at least
    the floor: 1/SNR alone all but drops the low-noise steps, and samples then keep a speckle of unremoved noise.
    """
    timesteps = torch.randint(0, schedule.steps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    predicted = model(schedule.add_noise(x0, noise, timesteps), timesteps.to(x0.dtype), context)
    errors = (predicted - noise).square().flatten(1).mean(dim=1)
    weights = loss_weights(schedule, timesteps, min_snr_gamma, x0_weight_cap, x0_weight_floor)
    return (weights.to(errors) * errors).mean()


def loss_weights(
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    min_snr_gamma: float | None,
    x0_weight_cap: float | None,
    x0_weight_floor: float | None = None,
) -> torch.Tensor:
    """Per-sample weights of the ε loss (all ones without a weighting); see :func:`diffusion_loss`."""
    alpha = schedule.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alpha / (1 - alpha)
    weights = torch.ones_like(snr)
    if min_snr_gamma is not None:
        weights = weights * snr.clamp(max=min_snr_gamma) / snr
    if x0_weight_cap is not None or x0_weight_floor is not None:
        weights = weights * (1 / snr).clamp(min=x0_weight_floor, max=x0_weight_cap)
    return weights


@torch.no_grad()
def ddim_sample(
    model: NoisePredictor,
    context: torch.Tensor,
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    *,
    steps: int = 50,
    guidance: float = 1.0,
    null_context: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    clip_denoised: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM samples of ``shape`` (batch first) for ``context``; ``guidance > 1`` mixes in the
    prediction for ``null_context`` (classifier-free guidance). ``clip_denoised`` clamps each step's estimate of x_0
    to [-1, 1] and re-derives the noise from it, as pixel-space samplers do (not for latents)."""
    if not 1 <= steps <= schedule.steps:
        raise ValueError(f"steps={steps} is out of range: allowed is 1 <= steps <= {schedule.steps}.")
    if guidance != 1.0 and null_context is None:
        raise ValueError("Classifier-free guidance needs null_context (the embedding of an empty prompt).")
    device = context.device
    x = torch.randn(shape, generator=generator).to(device, dtype)  # context may be token ids, so not its dtype
    times = torch.linspace(schedule.steps - 1, 0, steps).round().long().tolist()
    alphas = schedule.alphas_cumprod
    for index, t in enumerate(times):
        timesteps = torch.full((shape[0],), float(t), device=device, dtype=dtype)
        noise = model(x, timesteps, context)
        if guidance != 1.0:
            unconditional = model(x, timesteps, null_context)
            noise = unconditional + guidance * (noise - unconditional)
        alpha = float(alphas[t])
        alpha_prev = float(alphas[times[index + 1]]) if index + 1 < len(times) else 1.0
        x0 = (x - (1 - alpha) ** 0.5 * noise) / alpha**0.5
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            noise = (x - alpha**0.5 * x0) / (1 - alpha) ** 0.5
        x = alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * noise
    return x
