"""The streaming decision rule that turns VSViG's clip probabilities into seizure alarms.

VSViG (Xu et al., arXiv 2311.14775) outputs a probability for each sliding clip and reaches its reported latency "by
integrating a decision-making rule that combines output probabilities and an accumulative function"; the rule comes
from the authors' EEG work (Xu et al., "Shorter Latency of Real-time Epileptic Seizure Detection via Probabilistic
Prediction", 2023). The official repository does not ship it, so this is our reading, kept separate from
the network so it can be tuned on its own:

- every new probability p_t joins a window of the last ``window`` probabilities;
- the evidence is their sum, counting only probabilities of at least ``floor`` (a single confident clip, or a long
  run of lukewarm ones, never adds up to an alarm);
- an alarm fires when the evidence reaches ``threshold``; then ``refractory`` predictions pass before the next alarm
  can fire, so one seizure gives one alarm.

With probabilities at a steady p ≥ floor after onset, the first alarm comes ceil(threshold / p) - 1 predictions after
the first high one; a flat sequence below ``floor``, or one whose window sum stays under ``threshold``, never alarms.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class SeizureDecisionRule:
    """Windowed probability accumulation against a threshold; feed it one probability at a time with :meth:`update`."""

    window: int = 5
    threshold: float = 3.0
    floor: float = 0.5
    refractory: int = 60
    _recent: deque = field(default_factory=deque, init=False, repr=False)
    _cooldown: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 prediction, got {self.window}")
        if not 0 < self.threshold <= self.window:
            raise ValueError(f"threshold must be in (0, window={self.window}] (a sum of probabilities), got "
                             f"{self.threshold}")  # fmt: skip
        if not 0 <= self.floor < 1:
            raise ValueError(f"floor must be in [0, 1), got {self.floor}")
        if self.refractory < 0:
            raise ValueError(f"refractory must be >= 0 predictions, got {self.refractory}")

    def reset(self) -> None:
        self._recent.clear()
        self._cooldown = 0

    @property
    def evidence(self) -> float:
        return sum(p for p in self._recent if p >= self.floor)

    def update(self, probability: float) -> bool:
        """Add the newest clip probability; True when this prediction raises an alarm."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"a probability must be in [0, 1], got {probability}")
        self._recent.append(float(probability))
        if len(self._recent) > self.window:
            self._recent.popleft()
        if self._cooldown:
            self._cooldown -= 1
            return False
        if self.evidence >= self.threshold:
            self._cooldown = self.refractory
            return True
        return False

    def run(self, probabilities: Iterable[float]) -> list[int]:
        """The indices of the predictions that raise an alarm, from a fresh state."""
        self.reset()
        return [index for index, probability in enumerate(probabilities) if self.update(probability)]


def score_alarms(alarm_times: list[float], onset: float | None) -> dict[str, float | int | bool | None]:
    """Score one recording's alarms (in seconds): false alarms are those before ``onset`` (all of them when the
    recording has no seizure); the latency is from ``onset`` to the first alarm at or after it (None if missed)."""
    false_alarms = [time for time in alarm_times if onset is None or time < onset]
    detections = [time for time in alarm_times if onset is not None and time >= onset]
    return {
        "false_alarms": len(false_alarms),
        "detected": bool(detections),
        "latency_s": round(detections[0] - onset, 3) if detections else None,
    }
