"""What the demo computes, without any UI: one question answered by the unpatched model and by FastV, side by side.

Each request checks a replica of the model out of a pool, so simultaneous requests never share a patch, a kept-token
record or a KV cache; the replica is unpatched before it goes back. On the bundled 3.7 MB model the replicas cost
nothing; for a large model run the demo with ``--concurrency 1`` (one replica).
"""

from __future__ import annotations

import copy
import queue
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

import fastvision
from fastvision.demo.heatmap import model_view
from fastvision.flops import measure_flops

MAX_PIXELS = 4096 * 4096
MAX_QUESTION_CHARS = 500


class DemoInputError(ValueError):
    """A problem with what the user gave (shown in the UI as a friendly message, never as a traceback)."""


@dataclass
class ArmResult:
    """One side of the comparison."""

    answer: str
    prefill_ms: float
    prefill_flops: int


@dataclass
class Comparison:
    baseline: ArmResult
    fastv: ArmResult
    config: dict[str, Any]
    image_tokens: int
    kept_positions: list[int]  # indices into the image's visual tokens, in order
    scores: list[float] = field(default_factory=list)  # FastV score of every visual token
    view: Any = None  # the image as the vision tower saw it, for the heatmap

    @property
    def flops_ratio(self) -> float:
        return self.fastv.prefill_flops / self.baseline.prefill_flops

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": vars(self.baseline),
            "fastv": vars(self.fastv),
            "flops_ratio": self.flops_ratio,
            "latency_ratio": self.fastv.prefill_ms / self.baseline.prefill_ms,
            "config": self.config,
            "image_tokens": self.image_tokens,
            "kept_image_tokens": len(self.kept_positions),
            "kept_positions": self.kept_positions,
        }


def check_question(question: str | None) -> str:
    question = (question or "").strip()
    if not question:
        raise DemoInputError("Please type a question about the image.")
    if len(question) > MAX_QUESTION_CHARS:
        raise DemoInputError(f"The question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}.")
    return question


def open_image(path_or_image: Any) -> Any:
    """An RGB PIL image from an upload path (or a PIL image); unreadable or huge files are refused politely."""
    from PIL import Image, UnidentifiedImageError

    if path_or_image is None:
        raise DemoInputError("Please upload an image (or pick one of the examples).")
    if isinstance(path_or_image, Image.Image):
        image = path_or_image
    else:
        try:
            image = Image.open(path_or_image)
        except (UnidentifiedImageError, OSError) as error:
            raise DemoInputError("That file is not an image that can be read (PNG, JPEG, WebP, ...).") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DemoInputError(f"The image is {width}×{height} pixels; the limit is {MAX_PIXELS // 1_000_000} MP.")
    try:
        return image.convert("RGB")
    except OSError as error:  # truncated files fail only when decoded
        raise DemoInputError("That image file is damaged and cannot be decoded.") from error


class ReplicaPool:
    """``size`` independent copies of one model; ``checkout`` blocks until one is free."""

    def __init__(self, model: Any, size: int) -> None:
        if size < 1:
            raise ValueError(f"The demo needs at least one model replica, got concurrency {size}.")
        self._free: queue.Queue[Any] = queue.Queue()
        self._free.put(model)
        for _ in range(size - 1):
            self._free.put(copy.deepcopy(model))

    @contextmanager
    def checkout(self) -> Iterator[Any]:
        model = self._free.get()
        try:
            yield model
        finally:
            self._free.put(model)


class DemoEngine:
    """The model, its processor and the replica pool; ``compare`` answers one request."""

    def __init__(self, model: Any, processor: Any, concurrency: int = 4, timing_repeats: int = 3) -> None:
        self.processor = processor
        self.num_layers = int(model.config.get_text_config().num_hidden_layers)
        self.image_token_id = int(model.config.image_token_id)
        self.pool = ReplicaPool(model.eval(), concurrency)
        self.timing_repeats = timing_repeats

    def encode(self, image: Any, question: str) -> dict[str, torch.Tensor]:
        from fastvision.evals.vqa import chat_prompt

        prompt = chat_prompt(self.processor, question)
        return dict(self.processor(images=[image], text=[prompt], return_tensors="pt"))

    def _arm(self, model: Any, inputs: dict[str, torch.Tensor]) -> ArmResult:
        prefill = {**inputs, "logits_to_keep": 1, "use_cache": False}
        flops = measure_flops(lambda: model(**prefill))[0].total
        times = []
        for _ in range(self.timing_repeats):
            started = time.perf_counter()
            model(**prefill)
            times.append(time.perf_counter() - started)
        generated = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        answer = self.processor.tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return ArmResult(answer.strip(), 1000 * statistics.median(times), int(flops))

    @torch.inference_mode()
    def compare(self, image: Any, question: str, k: int, ratio: float, method: str = "last") -> Comparison:
        """Answer unpatched and patched: ``method`` is a FastV scoring (``SCORINGS``), ``"dart"``, ``"divprune"``
        or ``"visionzip"``."""
        question = check_question(question)
        image = open_image(image)
        if not 1 <= int(k) < self.num_layers:
            raise DemoInputError(f"K={k} is out of range for this model: allowed is 1 <= K < {self.num_layers}.")
        if method == "dart":
            config: Any = fastvision.DARTConfig(k=int(k), ratio=float(ratio))
        elif method == "divprune":  # prunes before the language model: K does not apply
            config = fastvision.DivPruneConfig(ratio=float(ratio))
        elif method == "visionzip":  # chooses in the vision tower (LLaVA), prunes before the language model
            config = fastvision.VisionZipConfig(ratio=float(ratio))
        else:
            config = fastvision.FastVConfig(k=int(k), ratio=float(ratio), scoring=method)
        inputs = self.encode(image, question)
        with self.pool.checkout() as model:
            baseline = self._arm(model, inputs)
            with fastvision.patched(model, config):  # unpatched again before the replica goes back, even on errors
                fastv = self._arm(model, inputs)
                model(**inputs, logits_to_keep=1, use_cache=False)  # this thread's latest prefill, read right after
                record = fastvision.kept_tokens(model)
        if record is None:
            raise DemoInputError("The model saw no image tokens for this input, so there was nothing to prune.")
        return Comparison(
            baseline=baseline,
            fastv=fastv,
            config=config.to_dict(),
            image_tokens=record.num_image_tokens[0],
            kept_positions=torch.nonzero(record.image_kept(0)).flatten().tolist(),
            scores=record.image_scores(0).tolist(),
            view=model_view(inputs.get("pixel_values"), self.processor.image_processor, image),
        )
