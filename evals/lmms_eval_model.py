"""The lmms-eval model ``fastvision``: lmms-eval's LLaVA chat model (``llava_hf_chat``) with a token-reduction method
applied, and the prefill FLOPs and latency each request cost, which lmms-eval itself does not report.

lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval) finds it through the ``lmms_eval.models`` entry point
(``fastvision.evals.lmms_plugin``). The ``fastv_*`` model_args are the lm-eval model's; every ``generate`` call is
charged as ``fastvision.evals.charged_model`` describes. The summed report is logged, and its numbers go into the
results' ``throughput`` block, which lmms-eval fills from ``log_metrics``, as ``avg_fastvision_<name>``.

Only ``generate_until`` requests are charged (lmms-eval's chat models answer by generation); a loglikelihood
request is refused rather than left out of the report. lmms-eval's chat model catches any error of ``generate`` and
records an empty answer; this model keeps the first such error and raises it once lmms-eval's loop returns, so a
failed request fails the run instead of scoring as a wrong answer. With several processes, the requests lmms-eval
adds to even out the ranks are charged too.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lmms_eval.models.chat.llava_hf import LlavaHf
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger

import fastvision
from fastvision.evals.charged_model import CostLedger, PrefillCharging, fastv_config_from_arguments

THROUGHPUT_KEYS = ("relative_prefill_flops", "prefill_time_ratio", "prefill_ms_per_request",
                   "baseline_prefill_ms_per_request", "image_tokens_per_request", "kept_image_tokens_per_request",
                   "requests")  # fmt: skip
# What lmms-eval's chat model adds to the processor's outputs when it calls generate.
GENERATION_SETTINGS = ("do_sample", "temperature", "top_p", "num_beams", "max_new_tokens", "use_cache", "pad_token_id",
                       "eos_token_id")  # fmt: skip


class FastVisionLMMS(PrefillCharging, LlavaHf):
    """``llava_hf_chat`` with ``fastv_method``, ``fastv_k``, ``fastv_ratio``, ``fastv_scoring``, ``fastv_modality``,
    ``fastv_seed`` and ``fastv_measure``; ``device`` defaults to CUDA where there is one, else the CPU."""

    is_simple = False

    def __init__(self, pretrained: str, device: str | None = None, **kwargs: Any) -> None:
        fastv = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith("fastv_")}
        self.fastv_config, self.fastv_measure = fastv_config_from_arguments(fastv)  # before any loading
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # lmms-eval passes device_map="" to from_pretrained for one process, which transformers 5 refuses.
            kwargs.setdefault("device_map", device)
        super().__init__(pretrained=pretrained, device=device, **kwargs)
        # lmms-eval's generate_until calls ``self.model.generate``; this instance attribute charges each call. It is
        # set before patching, so the engine's own generate guard wraps it and unpatching puts it back.
        self._uncharged_generate = self.model.generate
        self.model.generate = self._charged_generate
        try:
            fastvision.patch(self.model, self.fastv_config)
        except Exception:
            del self.model.generate
            raise
        self.start_charging()
        self._generate_errors: list[BaseException] = []

    def _charged_generate(self, **kwargs: Any) -> Any:
        inputs = {key: value for key, value in kwargs.items() if key not in GENERATION_SETTINGS}  # processor outputs
        try:
            return self._charge(
                inputs,
                lambda: self._uncharged_generate(**kwargs),
                lambda: self._uncharged_generate(
                    **inputs, max_new_tokens=1, do_sample=False, pad_token_id=self.eot_token_id
                ),  # its prefill only
            )
        except Exception as error:
            self._generate_errors.append(error)  # lmms-eval swallows it; generate_until raises it afterwards
            raise

    def generate_until(self, requests: list[Any]) -> list[Any]:
        self.costs = CostLedger()  # this call's costs only: lmms-eval clears its metric history per evaluation
        self._generate_errors = []
        try:
            answers = super().generate_until(requests)
        finally:
            charged = int(self._local_costs.requests)  # this process's requests that went through _charge
            self._merge_costs()
        if charged != len(requests):  # also catches an error of the engine's guard, which runs before _charge
            raise RuntimeError(
                f"{len(requests) - charged} of {len(requests)} requests failed inside generate (lmms-eval recorded "
                "empty answers for them)" + ("; the first error is chained below." if self._generate_errors else ".")
            ) from (self._generate_errors[0] if self._generate_errors else None)
        report = self.fastvision_report()
        logger.info(f"fastvision: {report}")
        numbers = {f"fastvision_{key}": float(report[key]) for key in THROUGHPUT_KEYS if key in report}
        log_metrics(total_elapsed_time=0.0, total_gen_tokens=0, avg_speed=0.0, additional_metrics=numbers)
        return answers

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "The lmms-eval model fastvision charges generate_until requests only; run loglikelihood tasks with "
            "`fastvision lm-eval --model fastvision` (lm-eval's hf-multimodal), which charges both."
        )
