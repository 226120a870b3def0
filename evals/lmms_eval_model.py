"""The lmms-eval model ``fastvision``: lmms-eval's LLaVA chat model (``llava_hf_chat``) with a token-reduction method
applied, and the prefill FLOPs and latency each request cost, which lmms-eval itself does not report.

lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval) finds it through the ``lmms_eval.models`` entry point
(``fastvision.evals.lmms_plugin``). The ``fastv_*`` model_args are the lm-eval model's; every ``generate`` call is
charged as ``fastvision.evals.charged_model`` describes. The summed report is logged, and its numbers go into the
results' ``throughput`` block, which lmms-eval fills from ``log_metrics``, as ``avg_fastvision_<name>``.

Only ``generate_until`` requests are charged (lmms-eval's chat models answer by generation); a loglikelihood
request is refused rather than left out of the report.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lmms_eval.models.chat.llava_hf import LlavaHf
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger

import fastvision
from fastvision.evals.charged_model import PrefillCharging, fastv_config_from_arguments

THROUGHPUT_KEYS = ("relative_prefill_flops", "prefill_time_ratio", "prefill_ms_per_request",
                   "baseline_prefill_ms_per_request", "image_tokens_per_request", "kept_image_tokens_per_request",
                   "requests")  # fmt: skip


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

    def _charged_generate(self, **kwargs: Any) -> Any:
        inputs = {key: kwargs[key] for key in ("input_ids", "attention_mask", "pixel_values") if key in kwargs}
        return self._charge(
            inputs,
            lambda: self._uncharged_generate(**kwargs),
            lambda: self._uncharged_generate(
                **inputs, max_new_tokens=1, do_sample=False, pad_token_id=self.eot_token_id
            ),  # its prefill only
        )

    def generate_until(self, requests: list[Any]) -> list[Any]:
        try:
            return super().generate_until(requests)
        finally:
            self._merge_costs()
            report = self.fastvision_report()
            logger.info(f"fastvision: {report}")
            numbers = {f"fastvision_{key}": float(report[key]) for key in THROUGHPUT_KEYS if key in report}
            log_metrics(total_elapsed_time=0.0, total_gen_tokens=0, avg_speed=0.0, additional_metrics=numbers)

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "The lmms-eval model fastvision charges generate_until requests only; run loglikelihood tasks with "
            "`fastvision lm-eval --model fastvision` (lm-eval's hf-multimodal), which charges both."
        )
