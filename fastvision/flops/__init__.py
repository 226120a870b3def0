"""FLOPs accounting: measured (FlopCounterMode), analytic (FastV's formula) and real-size presets."""

from fastvision.flops.analytic import DecoderShape, decoder_layer_macs, fastv_paper_macs, fastv_prefill_macs
from fastvision.flops.counter import FlopReport, measure_flops, register_cpu_sdpa_flops

__all__ = [
    "DecoderShape",
    "FlopReport",
    "decoder_layer_macs",
    "fastv_paper_macs",
    "fastv_prefill_macs",
    "measure_flops",
    "register_cpu_sdpa_flops",
]
