"""The lm-eval model ``fastvision``: lm-eval's ``hf-multimodal`` with FastV applied, and what each request cost.

The method is applied and every batch charged as ``fastvision.evals.charged_model`` describes. The totals are summed
over ranks (``accelerate launch``) and reported by ``get_model_info``, which lm-eval writes into the results under
``config.fastvision``. ``fastvision card`` reads them from there.

lm-eval 0.4 finds the model when this module is imported (``fastvision lm-eval`` does so). The package also
declares it in the ``lm_eval.models`` entry-point group, the plugin discovery lm-eval merged after 0.4.x
(EleutherAI/lm-evaluation-harness#4013), so ``lm_eval --model fastvision`` works there without the wrapper.
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.registry import model_registry, register_model
from lm_eval.models.hf_vlms import HFMultimodalLM

import fastvision
from fastvision.evals.charged_model import PrefillCharging, fastv_config_from_arguments

__all__ = ["FastVisionLM", "fastv_config_from_arguments"]


class FastVisionLM(PrefillCharging, HFMultimodalLM):
    """``hf-multimodal`` with FastV (or DART, DivPrune, VisionZip); model_args ``fastv_method``, ``fastv_k``,
    ``fastv_ratio``, ``fastv_scoring``, ``fastv_modality``, ``fastv_seed`` and ``fastv_measure`` on top of
    hf-multimodal's own."""

    def __init__(self, pretrained: Any, **kwargs: Any) -> None:
        fastv = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith("fastv_")}
        self.fastv_config, self.fastv_measure = fastv_config_from_arguments(fastv)  # before any loading
        super().__init__(pretrained, **kwargs)
        fastvision.patch(self.model, self.fastv_config)
        self.start_charging()
        if getattr(self, "accelerator", None) is not None and self._world_size == 1:
            # lm-eval splits requests over processes on GPUs only; on CPU every process would run them all.
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes

    def _model_multimodal_generate(self, inputs: Any, max_length: int, stop: list[str], **kwargs: Any) -> Any:
        model_inputs = dict(inputs)
        return self._charge(
            model_inputs,
            lambda: super(FastVisionLM, self)._model_multimodal_generate(inputs, max_length, stop, **kwargs),
            lambda: self.model.generate(
                **model_inputs, max_new_tokens=1, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            ),  # its prefill only
        )

    def _model_multimodal_call(self, inps: torch.Tensor, imgs: dict[str, Any], attn_mask: Any = None,
                               labels: Any = None) -> torch.Tensor:  # fmt: skip
        call = lambda: super(FastVisionLM, self)._model_multimodal_call(inps, imgs, attn_mask, labels)  # noqa: E731
        return self._charge({"input_ids": inps, **imgs}, call, call)

    # -- reporting ------------------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        try:
            return super().generate_until(requests, disable_tqdm)
        finally:
            self._merge_costs()

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        try:
            return super().loglikelihood(requests, disable_tqdm)
        finally:
            self._merge_costs()

    def get_model_info(self) -> dict[str, Any]:
        info = super().get_model_info()
        info["fastvision"] = self.fastvision_report()
        return info


# lm-eval 0.4 learns the name here. An lm-eval that reads the ``lm_eval.models`` entry points has already put a
# placeholder under the name, which it replaces with this class itself; registering again would collide with it.
if "fastvision" not in list(model_registry):
    register_model("fastvision")(FastVisionLM)
