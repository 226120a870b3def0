"""The validated, versioned configuration of FastV visual-token pruning.

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", arXiv 2403.06764, §4) lets layers ``0..k-1``
see every token, ranks the image tokens by the attention they receive at layer ``k-1`` and drops the lowest-ranked
``ratio`` fraction of them for layers ``k..``. The config is serialisable (``to_dict``/``from_dict``) so the applied
setting can be written into results JSON files and model cards.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

SCORINGS = ("last", "mean", "random", "stride", "pool")
MODALITIES = ("all", "image", "video")


def dropped_count(ratio: float, num_tokens: int) -> int:
    """``floor(ratio * n)``, with the product rounded to 9 decimals first (so ``0.3 * 10`` drops 3, not 2)."""
    return math.floor(round(ratio * num_tokens, 9))


def check_stage(k: object, ratio: object, where: str, method: str = "FastV") -> None:
    """Refuse a pruning layer ``k`` below 1 or a ``ratio`` outside [0, 1), naming the method and the value."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{method} {where}k must be an int, got {k!r} ({type(k).__name__}).")
    if k < 1:
        raise ValueError(f"{method} {where}k={k} is out of range: k must be >= 1 (layers 0..k-1 see every token).")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"{method} {where}ratio must be a number, got {ratio!r} ({type(ratio).__name__}).")
    if not (math.isfinite(ratio) and 0.0 <= ratio < 1.0):
        raise ValueError(
            f"{method} {where}ratio={ratio!r} is out of range: allowed is 0 <= ratio < 1 (1 would leave no image "
            "token)."
        )


@dataclass(frozen=True)
class FastVConfig:
    """What FastV prunes and where.

    ``scoring="last"`` ranks image tokens by the attention row of the last prompt token (as in the official code,
    github.com/pkunlp-icler/FastV); ``scoring="mean"`` averages the rows of every non-padding query (the paper's
    wording, §4.1). Both rows are the softmax after RoPE and masks, averaged over heads. Two baselines show what the
    attention ranking buys: ``scoring="random"`` ranks by seeded uniform noise, and ``scoring="stride"`` keeps the
    image tokens at evenly spaced positions whatever they show (keep-by-position). A third, ``scoring="pool"``, is a
    merge rather than a selection: the tokens entering layer ``k`` are averaged over bins of each image's 2-D grid,
    one kept token per bin (spatial downsampling; :mod:`fastvision.fastv.pooling`).

    ``schedule`` drops tokens in several stages, PyramidDrop-style (Xing et al., arXiv 2410.17247, §3.2): at each
    ``(layer, ratio)`` the still-kept image tokens are re-ranked at ``layer - 1`` and ``ratio`` of them are dropped,
    e.g. ``((2, 0.5), (16, 0.5))`` keeps 50% after layer 2 and 25% after layer 16. A one-stage schedule is plain
    FastV; ``k``/``ratio`` always equal the first stage, and passing ones that differ from it is an error.
    """

    k: int = field(
        default=None,  # type: ignore[assignment]  # resolved in __post_init__: 2, or the schedule's first layer
        metadata={"help": "Layers 0..k-1 see every token; pruning happens before layer k (default 2)."},
    )
    ratio: float = field(
        default=None,  # type: ignore[assignment]  # resolved in __post_init__: 0.5, or the schedule's first ratio
        metadata={"help": "Fraction of each sample's image tokens dropped, 0 <= ratio < 1 (default 0.5)."},
    )
    scoring: str = field(
        default="last",
        metadata={
            "help": "'last' (official code), 'mean' (paper text), or a baseline: 'random' (uniform noise) or "
            "'stride' (keep by position, evenly spaced), 'pool' (average over 2-D grid bins: a merge)."
        },
    )
    modality: str = field(
        default="all",
        metadata={"help": "Prunable tokens: 'all' (image and video, ranked together), 'image' or 'video'."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the noise that scoring='random' ranks by."})
    schedule: tuple[tuple[int, float], ...] | None = field(
        default=None,
        metadata={"help": "Multi-stage drops: strictly increasing layers, each with the fraction of the remaining "
                  "image tokens it drops. None means the single stage (k, ratio)."},
    )  # fmt: skip

    method: ClassVar[str] = "fastv"
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.schedule is not None:
            stages = tuple(tuple(stage) for stage in self.schedule)
            if not stages or any(len(stage) != 2 for stage in stages):
                raise ValueError(f"FastV schedule={self.schedule!r} must be a non-empty list of (layer, ratio) pairs.")
            for index, (k, ratio) in enumerate(stages):
                check_stage(k, ratio, f"schedule[{index}] ")
            layers = [k for k, _ in stages]
            if any(b <= a for a, b in itertools.pairwise(layers)):
                raise ValueError(f"FastV schedule layers {layers} must be strictly increasing.")
            stages = tuple((k, float(ratio)) for k, ratio in stages)
            conflicts = [
                f"{name}={given!r}"
                for name, given, first in (("k", self.k, stages[0][0]), ("ratio", self.ratio, stages[0][1]))
                if given is not None and given != first
            ]
            if conflicts:
                raise ValueError(
                    f"FastV {', '.join(conflicts)} conflicts with schedule={self.schedule!r}, whose first stage is "
                    f"(k={stages[0][0]}, ratio={stages[0][1]}); pass the schedule alone."
                )
            object.__setattr__(self, "schedule", stages)
            object.__setattr__(self, "k", stages[0][0])
            object.__setattr__(self, "ratio", stages[0][1])
        if self.k is None:
            object.__setattr__(self, "k", 2)
        if self.ratio is None:
            object.__setattr__(self, "ratio", 0.5)
        check_stage(self.k, self.ratio, "")
        if self.scoring not in SCORINGS:
            raise ValueError(f"FastV scoring={self.scoring!r} is unknown; allowed: {', '.join(SCORINGS)}.")
        if self.scoring == "pool" and len(self.stages) > 1:
            raise ValueError(
                f"FastV scoring='pool' merges tokens once, so it takes a single stage; got schedule={self.schedule!r}."
            )
        if self.modality not in MODALITIES:
            raise ValueError(f"FastV modality={self.modality!r} is unknown; allowed: {', '.join(MODALITIES)}.")
        object.__setattr__(self, "ratio", float(self.ratio))

    @property
    def stages(self) -> tuple[tuple[int, float], ...]:
        """The ``(layer, ratio)`` stages, one for plain FastV."""
        return self.schedule if self.schedule is not None else ((self.k, self.ratio),)

    def num_dropped(self, num_image_tokens: int) -> int:
        """How many of ``num_image_tokens`` tokens one sample drops at the first stage: ``floor(ratio * n)``."""
        return dropped_count(self.ratio, num_image_tokens)

    def kept_counts(self, num_image_tokens: int) -> list[int]:
        """Image tokens one sample still has after each stage."""
        remaining, counts = num_image_tokens, []
        for _, ratio in self.stages:
            remaining -= dropped_count(ratio, remaining)
            counts.append(remaining)
        return counts

    def to_dict(self) -> dict[str, Any]:
        data = {"method": self.method, "version": self.version, **asdict(self)}
        if self.schedule is not None:
            data["schedule"] = [list(stage) for stage in self.schedule]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastVConfig:
        return cls(**_known_fields(cls, _unversioned(cls, data, "FastV"), "FastV"))


class OneStageConfig:
    """What the one-stage token-reduction configs share (DART, DivPrune, VisionZip): stages, counts and a versioned
    dict form. A subclass is a frozen dataclass with a ``ratio`` field and sets ``method``, ``version`` and
    ``label``; ``k`` is a field where the user picks the layer, or a class constant (0: before the language model),
    which ``to_dict`` writes and ``from_dict`` checks."""

    method: ClassVar[str]
    version: ClassVar[int]
    label: ClassVar[str]  # the method's name in messages
    ratio: float
    k: int

    @property
    def stages(self) -> tuple[tuple[int, float], ...]:
        return ((self.k, self.ratio),)

    def num_dropped(self, num_image_tokens: int) -> int:
        return dropped_count(self.ratio, num_image_tokens)

    def kept_counts(self, num_image_tokens: int) -> list[int]:
        return [num_image_tokens - self.num_dropped(num_image_tokens)]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, "k": self.k, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        data = _unversioned(cls, data, cls.label)
        if "k" not in {f.name for f in fields(cls)} and data.pop("k", cls.k) != cls.k:
            raise ValueError(f"A {cls.label} config prunes before the language model: its k is {cls.k}.")
        return cls(**_known_fields(cls, data, cls.label))


def _unversioned(cls: Any, data: dict[str, Any], label: str) -> dict[str, Any]:
    """A copy of ``data`` (a config's ``to_dict`` form) without its method and version, after checking both."""
    data = dict(data)
    method = data.pop("method", cls.method)
    version = data.pop("version", cls.version)
    if method != cls.method:
        raise ValueError(f"Not a {label} config: method={method!r}, expected {cls.method!r}.")
    if version != cls.version:
        raise ValueError(f"{label} config version {version!r} is not supported; this fastvision reads {cls.version}.")
    return data


def _known_fields(cls: Any, data: dict[str, Any], label: str) -> dict[str, Any]:
    """``data``, refused if it names a key that is not a field of ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {label} config keys {unknown}; allowed: {sorted(known)}.")
    return data
