"""What the lm-eval model and the lmms-eval model ``fastvision`` share: their ``fastv_*`` arguments and the costs
charged to every batch they run.

FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024, https://github.com/pkunlp-icler/FastV)
and the other methods are applied with ``fastvision.patch`` when the model is loaded. Every batch of requests is then
charged with:

- its prefill latency, timed inside the real ``generate`` (or loglikelihood) call, on the patched model: from the
  first forward of the model to its end. transformers 5's ``generate`` encodes the images before that forward, so
  for generation the time is the language model's prefill, while the FLOPs count the whole prefill, tower included;
- with ``fastv_measure=True`` (the default) three extra prefills of the same batch: the patched prefill under
  ``FlopCounterMode`` (FLOPs and kept image tokens), and the unpatched prefill once counted and once timed (a
  one-token ``generate``, timed by the same forward hooks as the patched one). So the relative FLOPs and the latency
  ratio are paired, batch by batch, in one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

import fastvision
from fastvision.dart.config import DARTConfig
from fastvision.divprune.config import DivPruneConfig
from fastvision.flops import measure_flops
from fastvision.handle import get_handle
from fastvision.visionzip.config import VisionZipConfig

FASTV_ARGUMENTS = ("fastv_method", "fastv_k", "fastv_ratio", "fastv_scoring", "fastv_modality", "fastv_seed",
                   "fastv_measure")  # fmt: skip
LM_EVAL_METHODS = ("fastv", "dart", "divprune", "visionzip")  # fastv_method: the methods the engine runs
FASTV_ONLY_ARGUMENTS = ("fastv_scoring", "fastv_seed")


@dataclass
class CostLedger:
    """Sums over the batches one process ran (or, after ``merge``, all processes)."""

    requests: int = 0
    prefill_seconds: float = 0.0
    measured_requests: int = 0  # requests of the batches that got the extra measuring prefills
    prefill_flops: float = 0.0
    baseline_prefill_flops: float = 0.0
    baseline_prefill_seconds: float = 0.0
    measured_prefill_seconds: float = 0.0  # the patched prefill time of the measured batches, for the pairing
    image_tokens: float = 0.0
    kept_image_tokens: float = 0.0

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([float(getattr(self, f.name)) for f in fields(self)], dtype=torch.float64)

    def add(self, values: torch.Tensor) -> None:
        for field, value in zip(fields(self), values.tolist(), strict=True):
            setattr(self, field.name, type(getattr(self, field.name))(getattr(self, field.name) + value))

    def summary(self) -> dict[str, Any]:
        """Per-request means and the paired ratios; keys with no measurement behind them are left out."""
        report: dict[str, Any] = {"requests": self.requests, "totals": asdict(self)}
        if self.requests:
            report["prefill_ms_per_request"] = 1000 * self.prefill_seconds / self.requests
        measured = self.measured_requests
        if measured:
            report["prefill_flops_per_request"] = self.prefill_flops / measured
            report["baseline_prefill_flops_per_request"] = self.baseline_prefill_flops / measured
            report["relative_prefill_flops"] = self.prefill_flops / self.baseline_prefill_flops
            report["baseline_prefill_ms_per_request"] = 1000 * self.baseline_prefill_seconds / measured
            report["prefill_time_ratio"] = self.measured_prefill_seconds / self.baseline_prefill_seconds
            report["image_tokens_per_request"] = self.image_tokens / measured
            report["kept_image_tokens_per_request"] = self.kept_image_tokens / measured
        return report


def fastv_config_from_arguments(arguments: dict[str, Any]) -> tuple[Any, bool]:
    """The method's config and the ``fastv_measure`` flag from model_args; unknown ``fastv_*`` keys are refused.

    ``fastv_method`` picks the method: ``fastv`` (the default; ``fastv_scoring`` picks FastV's ranking or a baseline)
    ``dart`` (arXiv 2502.11494), which takes ``fastv_k``, ``fastv_ratio`` and ``fastv_modality``, ``divprune``
    (arXiv 2503.02175), which takes ``fastv_ratio`` and ``fastv_modality``, or ``visionzip`` (arXiv 2412.04467, LLaVA),
    which takes ``fastv_ratio``.
    """
    unknown = sorted(key for key in arguments if key.startswith("fastv_") and key not in FASTV_ARGUMENTS)
    if unknown:
        raise ValueError(f"Unknown fastvision model_args {unknown}; allowed: {', '.join(FASTV_ARGUMENTS)}.")
    measure = arguments.get("fastv_measure", True)
    if not isinstance(measure, bool):
        raise ValueError(f"fastv_measure must be true or false, got {measure!r}.")
    method = arguments.get("fastv_method", "fastv")
    if method not in LM_EVAL_METHODS:
        raise ValueError(f"fastv_method={method!r} is unknown; allowed: {', '.join(LM_EVAL_METHODS)}.")
    common = {
        "k": arguments.get("fastv_k", 2),
        "ratio": arguments.get("fastv_ratio", 0.5),
        "modality": arguments.get("fastv_modality", "all"),
    }
    if method != "fastv":
        before_the_model = method in ("divprune", "visionzip")
        only = (
            FASTV_ONLY_ARGUMENTS
            + (("fastv_k",) if before_the_model else ())
            + (("fastv_modality",) if method == "visionzip" else ())
        )
        stray = [key for key in only if key in arguments]
        if stray:
            raise ValueError(
                f"{stray} do not apply to fastv_method={method} (DivPrune and VisionZip prune before "
                "the language model: k=0; VisionZip prunes images)."
            )
        if method == "visionzip":
            return VisionZipConfig(ratio=common["ratio"]), measure
        if method == "divprune":
            return DivPruneConfig(ratio=common["ratio"], modality=common["modality"]), measure
        return DARTConfig(**common), measure
    scoring = arguments.get("fastv_scoring", "last")
    return fastvision.FastVConfig(**common, scoring=scoring, seed=arguments.get("fastv_seed", 0)), measure


class PrefillCharging:
    """Mixed into a harness's model class: times and counts every batch's prefill into ``self._local_costs``.

    The host class provides ``self.model`` (the patched model), ``self.device``, ``self._world_size`` and, with more
    than one process, ``self.accelerator``; it calls ``start_charging`` once the model is patched, wraps each real
    call in ``_charge`` and calls ``_merge_costs`` after each request type.
    """

    fastv_config: Any
    fastv_measure: bool

    def start_charging(self) -> None:
        """Start the ledgers and put the prefill clock's hooks on the (already patched) model."""
        self._local_costs = CostLedger()
        self.costs = CostLedger()  # summed over processes after every request type
        self._prefill_clock: dict[str, float | None] | None = None  # set while a real call is being timed
        self.model.register_forward_pre_hook(self._start_prefill_clock)
        self.model.register_forward_hook(self._stop_prefill_clock)

    # -- timing the real prefill -------------------------------------------------------------------------------
    def _synchronize(self) -> None:
        if torch.cuda.is_available() and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _start_prefill_clock(self, module: Any, args: Any) -> None:
        clock = self._prefill_clock
        if clock is not None and clock["started"] is None:
            self._synchronize()
            clock["started"] = time.perf_counter()

    def _stop_prefill_clock(self, module: Any, args: Any, output: Any) -> None:
        clock = self._prefill_clock
        if clock is not None and clock["seconds"] is None:
            self._synchronize()
            clock["seconds"] = time.perf_counter() - clock["started"]

    @contextmanager
    def _timed_prefill(self) -> Iterator[Callable[[], float]]:
        """Times the first forward inside the block: the prefill of a ``generate``, or a loglikelihood call."""
        self._prefill_clock = clock = {"started": None, "seconds": None}
        try:
            yield lambda: clock["seconds"] or 0.0
        finally:
            self._prefill_clock = None

    @contextmanager
    def _unpatched(self) -> Iterator[None]:
        fastvision.unpatch(self.model)
        try:
            yield
        finally:
            fastvision.patch(self.model, self.fastv_config)

    # -- charging a batch ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _charge(self, inputs: dict[str, Any], real_call: Callable[[], Any], baseline_prefill: Callable[[], Any]) -> Any:
        """Run ``real_call`` timing its prefill; with measuring on, add the counted prefills and the timed baseline.

        ``baseline_prefill`` starts with the same prefill as ``real_call``; it runs on the unpatched model, and both
        prefills are timed by the same forward hooks, so the two times are measured the same way.
        """
        batch = int(inputs["input_ids"].shape[0])
        counted = {**inputs, "logits_to_keep": 1, "use_cache": False}  # the same definition as ``fastvision eval``
        charged = CostLedger(requests=batch)  # this batch's numbers, added to the ledger only once all succeeded
        if self.fastv_measure:
            report, _ = measure_flops(lambda: self.model(**counted))
            record = fastvision.kept_tokens(self.model)
            if record is None and get_handle(self.model).engine.prunable_count(inputs) > 0:
                raise RuntimeError(
                    f"The patched model ({self.fastv_config}) left no kept-token record for a request with tokens it "
                    "prunes: the engine did not prune it, so its FLOPs would be the unpatched model's."
                )
            with self._unpatched():
                baseline, _ = measure_flops(lambda: self.model(**counted))
                with self._timed_prefill() as baseline_seconds:  # timed exactly as the patched prefill below
                    baseline_prefill()
            charged.measured_requests = batch
            charged.prefill_flops, charged.baseline_prefill_flops = report.total, baseline.total
            charged.baseline_prefill_seconds = baseline_seconds()
            if record is not None:
                charged.image_tokens = sum(record.num_visual_tokens)
                charged.kept_image_tokens = sum(record.num_kept_visual_tokens)
        with self._timed_prefill() as prefill_seconds:
            result = real_call()
        charged.prefill_seconds = prefill_seconds()
        if self.fastv_measure:
            charged.measured_prefill_seconds = charged.prefill_seconds
        self._local_costs.add(charged.to_tensor())  # a batch that failed anywhere above adds nothing
        return result

    def _merge_costs(self) -> None:
        """Add this process's costs since the last merge, summed over all processes, to ``self.costs``."""
        values = self._local_costs.to_tensor()
        if self._world_size > 1:
            values = self.accelerator.reduce(values.to(self.device), reduction="sum").cpu()
        self.costs.add(values)
        self._local_costs = CostLedger()

    def fastvision_report(self) -> dict[str, Any]:
        """The method, how costs were counted, and the summed costs: what both harnesses report."""
        return {
            "version": fastvision.__version__,
            "config": self.fastv_config.to_dict(),
            "measured": self.fastv_measure,
            "flops": "FlopCounterMode, 2 per multiply-add, prefill with logits_to_keep=1, padding included",
            **self.costs.summary(),
        }
