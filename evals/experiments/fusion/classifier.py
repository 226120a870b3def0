"""The judge of the intermediate-fusion experiment: a small CNN that reads colour, shape and position off a 32x32
render. Its accuracy on generated images against their captions measures text-image alignment, and its pooled
features define the Fréchet distance between generated and real images (an FID-like score; FID itself needs an
Inception network that cannot be downloaded here)."""

from __future__ import annotations

import torch
from torch import nn

from evals.experiments.fusion.data import COLORS, POSITIONS, SHAPES, CaptionedImages

HEADS = (len(COLORS), len(SHAPES), len(POSITIONS))


class AttributeClassifier(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.Linear(2 * width * 8 * 8, sum(HEADS))  # position needs the layout, so no global pooling

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Feature vectors (N, 64) for the Fréchet distance: the channel means of the last feature map."""
        return self.features(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        logits = self.heads(self.features(images).flatten(1))
        return list(logits.split(HEADS, dim=1))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3) predicted colour, shape and position indices."""
        return torch.stack([head.argmax(dim=1) for head in self(images)], dim=1)


def train_classifier(
    data: CaptionedImages, steps: int = 300, seed: int = 0, batch_size: int = 128
) -> AttributeClassifier:
    """Train on real renders (cross-entropy summed over the three attributes)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = AttributeClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(steps):
        chosen = torch.randint(0, len(data), (batch_size,), generator=generator)
        logits = model(data.images[chosen])
        loss = sum(nn.functional.cross_entropy(head, data.labels[chosen, i]) for i, head in enumerate(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def attribute_accuracy(model: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per-attribute accuracy and the fraction of images with all three right."""
    predicted = model.predict(images)
    correct = predicted == labels
    return {
        "color": correct[:, 0].float().mean().item(),
        "shape": correct[:, 1].float().mean().item(),
        "position": correct[:, 2].float().mean().item(),
        "all": correct.all(dim=1).float().mean().item(),
    }


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a and b (N, D): the formula of FID."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues = torch.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = eigenvalues.sqrt().real.sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt)
