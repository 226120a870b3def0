"""``python -m evals.experiments.seizure``: VSViG-Light trained on synthetic skeleton recordings, then run as a live
detector.

Training (VSViG: Xu et al., arXiv 2311.14775): random 3-second clips (30 frames at 10 fps) from the training
recordings, rendered on the fly (``skeleton_data.py``), with the authors' soft labels and a binary cross-entropy loss.
Evaluation streams held-out recordings the way a monitor would: a clip ending every half second, its probability fed
to the decision rule (``fastvision.backbones.seizure_rule``). Reported: clip accuracy (label ≥ 0.5 against
probability ≥ 0.5), detected seizures, the latency from onset to alarm, how long before the clinical onset (full
jerking) the alarm came, and false alarms per hour of seizure-free monitoring.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evals.experiments.seizure.skeleton_data import CLIP_FRAMES, FPS, Recording, make_recordings, render_clips
from fastvision.backbones import create_backbone
from fastvision.backbones.seizure_rule import SeizureDecisionRule, score_alarms


@dataclass(frozen=True)
class SeizureRunSettings:
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    train_recordings: int = 40
    test_recordings: int = 20
    seconds: float = 60.0
    hop_frames: int = 5  # a prediction every half second
    model: str = "vsvig_light"
    rule_window: int = 5
    rule_threshold: float = 3.0
    rule_refractory: int = 60  # predictions (30 s) after an alarm before the next can fire
    seed: int = 0
    threads: int = 2
    progress: bool = True


QUICK = SeizureRunSettings(steps=4, batch_size=4, train_recordings=4, test_recordings=2, seconds=12.0)


def sample_batch(recordings: list[Recording], batch_size: int, generator: torch.Generator) -> tuple[Any, ...]:
    """Random training clips: patches, coordinates and the label of each clip's last frame."""
    chosen = torch.randint(0, len(recordings), (batch_size,), generator=generator).tolist()
    tracks, labels = [], []
    for index in chosen:
        recording = recordings[index]
        end = int(torch.randint(CLIP_FRAMES, len(recording.labels) + 1, (1,), generator=generator))
        tracks.append(recording.keypoints[end - CLIP_FRAMES : end])
        labels.append(recording.labels[end - 1])
    patches, coordinates = render_clips(torch.stack(tracks), generator)
    return patches, coordinates, torch.stack(labels)


def train(model: torch.nn.Module, recordings: list[Recording], settings: SeizureRunSettings) -> list[float]:
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=settings.steps)
    model.train()
    losses = []
    for _ in tqdm(range(settings.steps), desc="VSViG", disable=not settings.progress, leave=False):
        patches, coordinates, labels = sample_batch(recordings, settings.batch_size, generator)
        loss = F.binary_cross_entropy_with_logits(model(patches, coordinates)[:, 0], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def stream_probabilities(model: torch.nn.Module, recording: Recording, hop: int, seed: int) -> tuple[list, list]:
    """The probability of each clip ending every ``hop`` frames, and those clips' labels."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ends = list(range(CLIP_FRAMES, len(recording.labels) + 1, hop))
    probabilities = []
    for chunk in (ends[i : i + 16] for i in range(0, len(ends), 16)):
        tracks = torch.stack([recording.keypoints[end - CLIP_FRAMES : end] for end in chunk])
        patches, coordinates = render_clips(tracks, generator)
        probabilities += torch.sigmoid(model(patches, coordinates)[:, 0]).tolist()
    return probabilities, [recording.labels[end - 1].item() for end in ends]


def run_seizure_experiment(settings: SeizureRunSettings) -> dict[str, Any]:
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    train_set = make_recordings(settings.train_recordings, settings.seconds, seed=settings.seed + 1)
    test_set = make_recordings(settings.test_recordings, settings.seconds, seed=settings.seed + 2)
    torch.manual_seed(settings.seed)
    model = create_backbone(settings.model)
    losses = train(model, train_set, settings)
    rule = SeizureDecisionRule(window=settings.rule_window, threshold=settings.rule_threshold,
                               refractory=settings.rule_refractory)  # fmt: skip
    traces, correct, total = [], 0, 0
    for index, recording in enumerate(test_set):
        probabilities, labels = stream_probabilities(model, recording, settings.hop_frames, settings.seed + index)
        correct += sum((p >= 0.5) == (label >= 0.5) for p, label in zip(probabilities, labels, strict=True))
        total += len(labels)
        times = [(CLIP_FRAMES + i * settings.hop_frames) / FPS for i in range(len(probabilities))]  # clip ends
        alarm_times = [times[i] for i in rule.run(probabilities)]
        onset = None if recording.onset is None else recording.onset / FPS
        clinical = None if recording.clinical_onset is None else recording.clinical_onset / FPS
        score = score_alarms(alarm_times, onset)
        advance = round(clinical - onset - score["latency_s"], 3) if score["detected"] else None
        traces.append({
            "seizure": onset is not None, "onset_s": onset, "clinical_onset_s": clinical,
            "seconds": recording.seconds, "prediction_times_s": times,
            "probabilities": [round(p, 4) for p in probabilities], "alarm_times_s": alarm_times, **score,
            "advance_before_clinical_onset_s": advance,
        })  # fmt: skip
    return {
        "schema": "fastvision.seizure/1",
        "settings": asdict(settings),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": statistics.fmean(losses[-20:]),
        "clip_accuracy": correct / total,
        "detection": summarize(traces),
        "recordings": traces,
        "duration_seconds": round(time.perf_counter() - started, 1),
    }


def summarize(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Detections, latency and advance (median and range), and false alarms per hour of seizure-free monitoring."""
    seizures = [trace for trace in traces if trace["seizure"]]
    latencies = [trace["latency_s"] for trace in seizures if trace["detected"]]
    advances = [trace["advance_before_clinical_onset_s"] for trace in seizures if trace["detected"]]
    # Seizure-free time: whole seizure-free recordings, and each seizure recording up to its onset.
    free_seconds = sum(trace["seconds"] if not trace["seizure"] else trace["onset_s"] for trace in traces)
    false_alarms = sum(trace["false_alarms"] for trace in traces)
    return {
        "seizures": len(seizures),
        "detected": len(latencies),
        "median_latency_s": statistics.median(latencies) if latencies else None,
        "latency_range_s": [min(latencies), max(latencies)] if latencies else None,
        "median_advance_before_clinical_onset_s": statistics.median(advances) if advances else None,
        "false_alarms": false_alarms,
        "hours_monitored": round(free_seconds / 3600, 4),
        "false_alarms_per_hour": round(false_alarms / (free_seconds / 3600), 3) if free_seconds else None,
    }


def seizure_plot(results: dict[str, Any], path: str | Path) -> Path:
    """The streamed probability of two seizure recordings and one seizure-free one, with onsets and alarms."""
    import matplotlib.pyplot as plt

    from fastvision.evals.plot import save_figure

    seizures = [trace for trace in results["recordings"] if trace["seizure"]][:2]
    calm = [trace for trace in results["recordings"] if not trace["seizure"]][:1]
    shown = seizures + calm
    figure, axes = plt.subplots(len(shown), 1, figsize=(9, 2.2 * len(shown)), sharex=True, squeeze=False)
    threshold = results["settings"]["rule_threshold"] / results["settings"]["rule_window"]
    for axis, trace in zip(axes[:, 0], shown, strict=True):
        axis.plot(trace["prediction_times_s"], trace["probabilities"], color="tab:blue", label="P(seizure)")
        axis.axhline(threshold, color="gray", linestyle=":", label="rule: mean over window")
        if trace["seizure"]:
            axis.axvspan(trace["onset_s"], trace["clinical_onset_s"], color="tab:orange", alpha=0.2,
                         label="onset → clinical onset")  # fmt: skip
        for alarm in trace["alarm_times_s"]:
            axis.axvline(alarm, color="tab:red", linewidth=2, label="alarm")
        axis.set(ylim=(-0.05, 1.05), ylabel="probability")
        axis.set_title("seizure recording" if trace["seizure"] else "seizure-free recording", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("seconds (each point: the 3-second clip ending then)")
    detection = results["detection"]
    figure.suptitle(f"VSViG-Light on held-out synthetic recordings: {detection['detected']}/{detection['seizures']} "
                    f"detected, median latency {detection['median_latency_s']} s, "
                    f"{detection['false_alarms']} false alarms", fontsize=10)  # fmt: skip
    return save_figure(figure, path)
