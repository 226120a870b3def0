"""Synthetic skeleton recordings with seizure onsets, for the VSViG experiment (VSViG: Xu et al., arXiv 2311.14775).

A recording is a lying patient's 15 keypoints (5 parts of 3 points: head, two arms, two legs) at 10 frames a second.
Everyone breathes and drifts slightly; everyone makes a few voluntary movements (a limb moves smoothly to a new
place) and brief tremor bursts (under 1.5 s of fast small shaking): the ordinary motion a detector must not alarm on.
A seizure recording adds, from its onset, rhythmic clonic jerking (1.5 to 3 Hz) that starts in one arm, grows over
``ramp_seconds`` to full amplitude (the "clinical onset") and spreads to the other limbs.

Clip labels follow the VSViG authors' recommendation: 0 before the onset, 1 after the clinical onset, rising
exponentially in between. The network sees, as in the paper, a 32x32 patch around each keypoint (the limbs drawn as
thick lines on a noisy background, weighted by a Gaussian window, as the official ``extract_patches.py`` weights its
crops) plus the keypoint coordinates (as motion about each point's mean position in the clip: ``clip_motion``).
Patches are rendered on the fly (PIL lines) from the stored keypoint tracks, so a recording costs kilobytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FPS = 10
CLIP_FRAMES = 30
FRAME_SIZE = 160
PATCH = 32
# (x, y) rest pose of a patient lying with the head to the left: head top, nose, neck; each arm shoulder, elbow,
# wrist; each leg hip, knee, ankle.
REST_POSE = torch.tensor([
    [20, 80], [32, 80], [42, 80],
    [48, 62], [64, 50], [80, 46],
    [48, 98], [64, 110], [80, 114],
    [96, 70], [120, 68], [144, 68],
    [96, 90], [120, 92], [144, 92],
], dtype=torch.float32)  # fmt: skip
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (2, 6), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
         (13, 14), (3, 9), (6, 12))  # fmt: skip
LIMBS = (1, 2, 3, 4)  # parts that move: the two arms and the two legs (part 0 is the head)


@dataclass(frozen=True)
class Recording:
    keypoints: torch.Tensor  # (T, 15, 2) pixel coordinates
    labels: torch.Tensor  # (T,) seizure label of a clip ending at each frame
    onset: int | None  # frame of the seizure's onset, None for a seizure-free recording
    clinical_onset: int | None  # frame at which the jerking reaches full amplitude

    @property
    def seconds(self) -> float:
        return len(self.labels) / FPS


def _smooth_noise(frames: int, scale: float, generator: torch.Generator, smoothing: int = 15) -> torch.Tensor:
    noise = torch.randn(frames + smoothing, 15, 2, generator=generator)
    kernel = torch.ones(smoothing) / smoothing
    smoothed = torch.nn.functional.conv1d(noise.permute(1, 2, 0).reshape(30, 1, -1), kernel[None, None])
    return smoothed.reshape(15, 2, -1).permute(2, 0, 1)[:frames] * scale


def make_recording(seconds: float, seizure: bool, generator: torch.Generator, ramp_seconds: float = 5.0) -> Recording:
    """One recording; a seizure starts 35-60% of the way through when ``seizure`` is set."""
    frames = int(seconds * FPS)
    time = torch.arange(frames, dtype=torch.float32) / FPS

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    points = REST_POSE + torch.randn(15, 2, generator=generator) * 2 + torch.tensor([uniform(-8, 8), uniform(-8, 8)])
    points = points.expand(frames, 15, 2).clone() + _smooth_noise(frames, 1.5, generator)
    points[:, :, 1] += 1.0 * torch.sin(2 * math.pi * 0.25 * time)[:, None]  # breathing
    for _ in range(int(seconds / 15) + 1):  # voluntary movements: a limb glides to a new place over 1-2 s
        part, start, length = LIMBS[int(uniform(0, 4))], int(uniform(0, frames)), int(uniform(10, 20))
        shift = torch.tensor([uniform(-10, 10), uniform(-10, 10)])
        progress = ((torch.arange(frames) - start) / length).clamp(0, 1)
        weights = torch.tensor([0.3, 0.7, 1.0])
        points[:, 3 * part : 3 * part + 3] += progress[:, None, None] * weights[None, :, None] * shift
    for _ in range(int(seconds / 20) + 1):  # brief tremor bursts: fast, small, under 1.5 s
        part, start, length = LIMBS[int(uniform(0, 4))], int(uniform(0, frames)), int(uniform(5, 15))
        window = ((torch.arange(frames) >= start) & (torch.arange(frames) < start + length)).float()
        shake = window * 2.5 * torch.sin(2 * math.pi * uniform(3.0, 4.0) * time)
        points[:, 3 * part + 1 : 3 * part + 3, 1] += shake[:, None]
    labels = torch.zeros(frames)
    onset = clinical = None
    if seizure:
        onset = int(frames * uniform(0.35, 0.6))
        clinical = onset + int(ramp_seconds * FPS)
        since = (torch.arange(frames) - onset).clamp(min=0).float()
        growth = (since / (clinical - onset)).clamp(max=1.0)
        order = [LIMBS[int(uniform(0, 2))]] + [part for part in LIMBS]  # one arm first, then every limb
        frequency = uniform(1.5, 3.0)
        for rank, part in enumerate(dict.fromkeys(order)):
            delay = rank * 0.25 * (clinical - onset)
            amplitude = ((since - delay) / (clinical - onset)).clamp(0, 1) * uniform(6, 10)
            jerk = amplitude * torch.sin(2 * math.pi * frequency * time + uniform(0, math.pi)).sign() * \
                torch.sin(2 * math.pi * frequency * time).abs().sqrt()  # fmt: skip
            direction = torch.nn.functional.normalize(torch.randn(2, generator=generator), dim=0)
            points[:, 3 * part + 1 : 3 * part + 3] += jerk[:, None, None] * direction
        labels = torch.where(torch.arange(frames) >= onset, (torch.exp(3 * growth) - 1) / (math.exp(3) - 1), labels)
    return Recording(points, labels, onset, clinical)


def make_recordings(count: int, seconds: float, seed: int, seizure_fraction: float = 0.5) -> list[Recording]:
    generator = torch.Generator().manual_seed(seed)
    seizures = round(count * seizure_fraction)
    return [make_recording(seconds, index < seizures, generator) for index in range(count)]


def _draw_frames(keypoints: torch.Tensor) -> torch.Tensor:
    """(F, 15, 2) keypoints -> (F, H + 32, W + 32) uint8 frames with the limbs drawn 5 pixels thick (PIL), padded by
    half a patch on every side so every crop stays inside."""
    from PIL import Image, ImageDraw

    pad = PATCH // 2
    frames = []
    for points in (keypoints + pad).tolist():
        image = Image.new("L", (FRAME_SIZE + 2 * pad, FRAME_SIZE + 2 * pad))
        draw = ImageDraw.Draw(image)
        for start, end in BONES:
            draw.line([tuple(points[start]), tuple(points[end])], fill=255, width=5)
        frames.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8))
    return torch.stack(frames).reshape(len(frames), FRAME_SIZE + 2 * pad, FRAME_SIZE + 2 * pad)


def render_clips(keypoints: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint tracks (N, T, 15, 2) -> VSViG's inputs: patches (N, T, 15, 3, 32, 32) and coordinates (N, T, 15, 3)."""
    flat = keypoints.reshape(-1, 15, 2).clamp(0, FRAME_SIZE - 1)
    frames = _draw_frames(flat)
    corner = flat.round().long()  # top-left of each patch in the padded frame = the keypoint in the unpadded one
    rows = corner[..., 1, None] + torch.arange(PATCH)  # (F, 15, 32)
    cols = corner[..., 0, None] + torch.arange(PATCH)
    index = torch.arange(len(flat))[:, None, None, None]
    limb = frames[index, rows[..., :, None], cols[..., None, :]].float() / 255  # (F, 15, 32, 32)
    limb = limb.reshape(*keypoints.shape[:3], PATCH, PATCH)
    offsets = torch.arange(PATCH, dtype=torch.float32) - PATCH / 2 + 0.5
    window = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 10.0**2))
    background = 0.15 + 0.1 * torch.rand(limb.shape, generator=generator)
    gray = (limb * 0.85 + (1 - limb) * background) * window
    skin = torch.tensor([1.0, 0.8, 0.65])
    patches = gray[..., None, :, :] * skin[:, None, None]
    confidence = 0.9 + 0.1 * torch.rand(*keypoints.shape[:-1], 1, generator=generator)
    return patches, torch.cat([clip_motion(keypoints), confidence], dim=-1)


def clip_motion(keypoints: torch.Tensor) -> torch.Tensor:
    """Each point's offset from its own mean position over the clip, in units of 4 pixels: (N, T, 15, 2).

    VSViG adds an embedding of the keypoint coordinates to the patch features. We give it the coordinates relative to
    each point's mean over the clip rather than absolute ones: where the patient lies is already in the patches, and
    with absolute coordinates VSViG-Light learnt nothing in 400 CPU steps (validation loss stayed at the prior's
    0.57), while with these it learns within tens of steps.
    """
    return (keypoints - keypoints.mean(dim=1, keepdim=True)) / 4
