"""``python -m evals.experiments.fusion``: early against intermediate fusion on a real small text-to-image
experiment, on CPU.

The same small U-ViT (pixel space, 32x32, patch 4) with a word-level text encoder is trained from scratch on
procedural captioned renders (``data.py``) three ways: early fusion (U-ViT as published), intermediate fusion
with concatenation and with cross-attention (``fastvision.patch(uvit, fusion="intermediate", ...)``, arXiv
2403.16530), each for the same steps and seeds. Each run is judged on images sampled with DDIM for fixed captions:

- alignment: the attribute classifier's accuracy against the captions (colour, shape, position, all three);
- fidelity: the Fréchet distance to real renders in the classifier's feature space, beside a real-vs-real floor;
- cost: FLOPs of one forward (FlopCounterMode) and training-step time, both as ratios to early fusion, the step times
  measured round-robin in one process so that machine noise hits every variant alike.

The runs are independent, so they are spread over ``workers`` processes. Every run trains and samples on one thread,
which makes its numbers the same whatever the number of workers.
"""

from __future__ import annotations

import copy
import io
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

import fastvision
from evals.experiments.fusion.data import (
    CAPTION_LENGTH,
    NULL_WORD,
    SHAPE_RADIUS,
    VOCABULARY,
    CaptionedImages,
    make_dataset,
)
from fastvision.flops.uvit import uvit_cost
from fastvision.uvit import UViT, UViTConfig
from fastvision.uvit.diffusion import NoiseSchedule, ddim_sample, diffusion_loss
from fastvision.uvit.model import Block

MODEL = UViTConfig(image_size=32, patch_size=4, in_chans=3, embed_dim=96, depth=6, num_heads=4, mlp_ratio=4.0,
                   text_dim=64, text_tokens=CAPTION_LENGTH, pos_embed_init="sincos")  # fmt: skip
VARIANTS: dict[str, dict[str, Any] | None] = {
    "early (U-ViT)": None,
    "intermediate concat c1 v2": {"fusion": "intermediate", "v": 2, "c": 1, "conditioning": "concat"},
    "intermediate cross c1 v2": {"fusion": "intermediate", "v": 2, "c": 1, "conditioning": "cross"},
}
SHORT_NAMES = {"early": "early (U-ViT)", "concat": "intermediate concat c1 v2", "cross": "intermediate cross c1 v2"}

TRAIN_SEED, PROMPT_SEED, REFERENCE_SEED, JUDGE_SEED = 1234, 99, 7, 2024  # the renders' seeds


@dataclass(frozen=True)
class FusionRunSettings:
    model: UViTConfig = field(default=MODEL)
    steps: int = 800
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 32
    learning_rate: float = 2e-3
    caption_dropout: float = 0.1  # trains the unconditional prediction for classifier-free guidance
    sample_steps: int = 25
    guidance: float = 4.0
    samples: int = 96
    train_images: int = 6000
    judge_steps: int = 300
    timing_rounds: int = 12
    min_snr_gamma: float | None = None
    x0_weight_cap: float | None = 20.0  # weight the high-noise steps: plain ε loss left the samples as noise
    x0_weight_floor: float | None = None  # 1.0 keeps plain ε loss at the low-noise steps
    ema_decay: float | None = 0.995  # sample from an exponential moving average of the weights
    workers: int = 2  # processes that train runs side by side (one thread each)
    variants: tuple[str, ...] = tuple(VARIANTS)  # the first is the baseline of the cost ratios
    shape_radius: tuple[int, int] = SHAPE_RADIUS


QUICK = FusionRunSettings(steps=250, seeds=(0, 1), samples=48, sample_steps=15, train_images=3000)


class TextEncoder(nn.Module):
    """Word embeddings, learned positions and one transformer block: captions (B, 6) -> (B, 6, text_dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCABULARY), dim)
        self.position = nn.Parameter(torch.zeros(1, CAPTION_LENGTH, dim))
        self.block = Block(dim, num_heads=4, mlp_ratio=2.0, qkv_bias=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.block(self.embed(tokens) + self.position)


class CaptionedUViT(nn.Module):
    """The text encoder feeding a U-ViT: ``model(x_t, timesteps, caption_tokens) -> ε``."""

    def __init__(self, config: UViTConfig, fusion: dict[str, Any] | None) -> None:
        super().__init__()
        self.text = TextEncoder(config.text_dim)
        self.uvit = UViT(config)
        if fusion is not None:
            fastvision.patch(self.uvit, **fusion)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.uvit(x, timesteps, self.text(tokens))


def null_tokens(count: int) -> torch.Tensor:
    return torch.full((count, CAPTION_LENGTH), VOCABULARY.index(NULL_WORD), dtype=torch.long)


def build_variant(fusion: dict[str, Any] | None, seed: int, config: UViTConfig = MODEL) -> CaptionedUViT:
    torch.manual_seed(seed)
    return CaptionedUViT(config, fusion)


def train_variant(
    model: CaptionedUViT, data: CaptionedImages, settings: FusionRunSettings, seed: int, schedule: NoiseSchedule
) -> tuple[list[float], CaptionedUViT]:
    """Train in place; returns the loss of every step and the model to sample from (the EMA copy when
    ``settings.ema_decay`` is set, with the usual warm-up min(decay, (1 + step) / (10 + step)); else ``model``)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    average = copy.deepcopy(model).requires_grad_(False) if settings.ema_decay else None
    losses = []
    model.train()
    for step in range(settings.steps):
        losses.append(training_step(model, optimizer, data, settings, schedule, generator))
        if average is not None:
            decay = min(settings.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for kept, trained in zip(average.parameters(), model.parameters(), strict=True):
                    kept.lerp_(trained, 1 - decay)
    return losses, (average if average is not None else model)


def training_step(
    model: CaptionedUViT,
    optimizer: torch.optim.Optimizer,
    data: CaptionedImages,
    settings: FusionRunSettings,
    schedule: NoiseSchedule,
    generator: torch.Generator,
) -> float:
    chosen = torch.randint(0, len(data), (settings.batch_size,), generator=generator)
    tokens = data.tokens[chosen].clone()
    dropped = torch.rand(settings.batch_size, generator=generator) < settings.caption_dropout
    tokens[dropped] = null_tokens(int(dropped.sum()))
    loss = diffusion_loss(model, data.images[chosen], tokens, schedule, generator, min_snr_gamma=settings.min_snr_gamma,
                          x0_weight_cap=settings.x0_weight_cap, x0_weight_floor=settings.x0_weight_floor)  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def sample_images(model: CaptionedUViT, tokens: torch.Tensor, settings: FusionRunSettings, seed: int,
                  schedule: NoiseSchedule) -> torch.Tensor:  # fmt: skip
    """DDIM samples in [-1, 1] for caption ``tokens`` (N, 6), with classifier-free guidance."""
    model.eval()
    config = settings.model
    shape = (tokens.shape[0], config.in_chans, config.image_size, config.image_size)
    generator = torch.Generator().manual_seed(seed)
    samples = ddim_sample(model, tokens, shape, schedule, steps=settings.sample_steps, guidance=settings.guidance,
                          null_context=null_tokens(tokens.shape[0]), generator=generator,
                          clip_denoised=True)  # pixel space  # fmt: skip
    return samples.clamp(-1, 1)


def paired_step_times(data: CaptionedImages, settings: FusionRunSettings, rounds: int = 12) -> dict[str, float]:
    """Median training-step seconds per variant, timed round-robin (one step of each per round, first round warm-up)."""
    schedule = NoiseSchedule.stable_diffusion()
    models = {name: build_variant(VARIANTS[name], 0, settings.model) for name in settings.variants}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=settings.learning_rate) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    generator = torch.Generator().manual_seed(0)
    for round_index in range(rounds + 1):
        for name, model in models.items():
            started = time.perf_counter()
            training_step(model, optimizers[name], data, settings, schedule, generator)
            if round_index:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass(frozen=True)
class _Job:
    """One training run, and what every run shares: the settings, the judge (its weights as bytes, so that worker
    processes rebuild it without pickling live tensors) and its features of the real reference renders."""

    variant: str
    seed: int
    settings: FusionRunSettings
    judge_weights: bytes
    real_features: Any  # numpy (512, 64)


_DATA: dict[tuple[int, int, tuple[int, int]], CaptionedImages] = {}  # per process: renders, made once from seeds


def _renders(settings: FusionRunSettings, count: int, seed: int) -> CaptionedImages:
    radius = settings.shape_radius
    if (count, seed, radius) not in _DATA:
        _DATA[(count, seed, radius)] = make_dataset(count, seed=seed, radius=radius)
    return _DATA[(count, seed, radius)]


def _run_job(job: _Job) -> tuple[dict[str, Any], Any]:
    """Train one variant for one seed, sample the fixed captions and judge them (on one thread)."""
    from evals.experiments.fusion.classifier import AttributeClassifier, attribute_accuracy, frechet_distance

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        settings, schedule = job.settings, NoiseSchedule.stable_diffusion()
        prompts = _renders(settings, settings.samples, PROMPT_SEED)
        model = build_variant(VARIANTS[job.variant], job.seed, settings.model)
        losses, sampler = train_variant(
            model, _renders(settings, settings.train_images, TRAIN_SEED), settings, job.seed, schedule
        )
        images = sample_images(sampler, prompts.tokens, settings, job.seed, schedule)
        judge = AttributeClassifier()
        judge.load_state_dict(torch.load(io.BytesIO(job.judge_weights)))
        with torch.no_grad():
            accuracy = attribute_accuracy(judge.eval(), images, prompts.labels)
            distance = frechet_distance(judge.embed(images), torch.from_numpy(job.real_features))
    finally:
        torch.set_num_threads(threads)
    run = {"variant": job.variant, "seed": job.seed, "alignment": accuracy, "frechet_distance": distance,
           "final_loss": statistics.fmean(losses[-50:]), "seconds": time.perf_counter() - started}  # fmt: skip
    return run, images.numpy()


def _run_all(jobs: list[_Job], workers: int) -> Iterator[tuple[dict[str, Any], Any]]:
    """Results in the order the runs finish: in this process for one worker, else in a spawned process pool."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_job, jobs)
        return
    context = multiprocessing.get_context("spawn")  # fork would copy this process's thread pools and locks
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def run_fusion_experiment(settings: FusionRunSettings, progress: Any = None) -> dict[str, Any]:
    """Train and judge every variant for every seed; returns the results (see ``report.py`` for the files)."""
    from evals.experiments.fusion.classifier import attribute_accuracy, frechet_distance, train_classifier

    if settings.workers < 1:
        raise ValueError(f"workers must be at least 1, got {settings.workers}.")
    unknown = [name for name in settings.variants if name not in VARIANTS]
    if unknown or not settings.variants:
        raise ValueError(f"Unknown or no variants {unknown or settings.variants}; known: {', '.join(VARIANTS)}.")
    advance = progress or (lambda message: None)
    started = time.perf_counter()
    prompts = _renders(settings, settings.samples, PROMPT_SEED)  # the captions every run draws, and their real renders
    judge = train_classifier(
        make_dataset(4000, seed=JUDGE_SEED, radius=settings.shape_radius), steps=settings.judge_steps, seed=0
    )
    with torch.no_grad():
        real_features = judge.embed(_renders(settings, 512, REFERENCE_SEED).images)
        floor = frechet_distance(judge.embed(prompts.images), real_features)
        judge_accuracy = attribute_accuracy(judge, prompts.images, prompts.labels)
    weights = io.BytesIO()
    torch.save(judge.state_dict(), weights)
    shared = (weights.getvalue(), real_features.numpy())
    jobs = [_Job(name, seed, settings, *shared) for name in settings.variants for seed in settings.seeds]
    finished = []
    for run, images in _run_all(jobs, settings.workers):
        finished.append((run, images))
        advance(f"[{len(finished)}/{len(jobs)}, {time.perf_counter() - started:.0f} s] {run['variant']} seed "
                f"{run['seed']}: alignment {run['alignment']['all']:.3f}, Fréchet distance "
                f"{run['frechet_distance']:.2f}")  # fmt: skip
    order = {(job.variant, job.seed): index for index, job in enumerate(jobs)}
    finished.sort(key=lambda pair: order[(pair[0]["variant"], pair[0]["seed"])])
    runs = [run for run, _ in finished]
    samples = {}
    for run, images in finished:
        samples.setdefault(run["variant"], torch.from_numpy(images))
    flops = {name: uvit_cost(settings.model, VARIANTS[name])["flops"] for name in settings.variants}  # no text encoder
    step_times = paired_step_times(
        _renders(settings, settings.train_images, TRAIN_SEED), settings, rounds=settings.timing_rounds
    )
    baseline = settings.variants[0]
    summary = {}
    for name in settings.variants:
        mine = [run for run in runs if run["variant"] == name]
        summary[name] = {
            **{f"alignment_{key}": _spread([run["alignment"][key] for run in mine]) for key in mine[0]["alignment"]},
            "frechet_distance": _spread([run["frechet_distance"] for run in mine]),
            "flops": flops[name],
            "flops_ratio": flops[name] / flops[baseline],
            "step_seconds": step_times[name],
            "step_time_ratio": step_times[name] / step_times[baseline],
        }
    return {
        "schema": "fastvision.fusion/1",
        "model": settings.model.to_dict(),
        "variants": {name: VARIANTS[name] for name in settings.variants},
        "settings": {**asdict(settings), "seeds": list(settings.seeds)},
        "judge_accuracy_on_real": judge_accuracy,
        "real_vs_real_frechet_distance": floor,
        "runs": runs,
        "summary": summary,
        "_samples": samples,
        "_prompts": prompts,
    }


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}  # fmt: skip
