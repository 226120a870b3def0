"""Prefill and decode benchmark of FastV on a LLaVA-1.5-shaped model: time ratios against FLOPs ratios.

Arms (interleaved within every repeat, in rotating order; ratios are medians over repeats of the paired per-repeat
ratios, since shared machines are noisy; on CPU one thread by default, which is far steadier than two):
``unpatched``, ``fastv_r0`` (patched with ratio 0: the engine's overhead) and ``fastv`` (K=2, R=0.5 by default).

Targets (issue #2): prefill time ratio <= 1.03 x the FLOPs ratio (>= 0.97 of the ideal speed-up; FastV's eager code
reaches about 0.73); ratio-0 overhead <= 1.01; decode not slower; KV-cache bytes reduced by the ideal fraction.

    python -m fastvision.evals.benchmarks.bench_prefill --out evals/results/bench_prefill_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import fastvision
from fastvision.flops import measure_flops
from fastvision.testing import llava_shaped

SCHEMA = "fastvision.bench_prefill/1"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _inputs(model: Any, text_tokens: int, device: torch.device) -> dict[str, torch.Tensor]:
    config = model.config
    image_tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, config.image_token_id, (text_tokens,), generator=generator)
    ids = torch.cat([text[:1], torch.full((image_tokens,), config.image_token_id), text[1:]])[None]
    size = config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size, generator=generator)
    return {"input_ids": ids.to(device), "pixel_values": pixels.to(device=device, dtype=model.dtype)}


def _prefill(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    return model(**inputs, use_cache=True, logits_to_keep=1)


def _cache_bytes(cache: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def _timed_run(model: Any, inputs: dict[str, torch.Tensor], steps: int, device: torch.device) -> tuple:
    """Prefill, then greedy-decode ``steps`` tokens: (prefill seconds, decode seconds, KV-cache bytes after prefill)."""
    _sync(device)
    start = time.perf_counter()
    out = _prefill(model, inputs)
    _sync(device)
    prefill_seconds = time.perf_counter() - start
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    cache_bytes = _cache_bytes(cache)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
    _sync(device)
    return prefill_seconds, time.perf_counter() - start, cache_bytes


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = llava_shaped(hidden_size=args.hidden, layers=args.layers, heads=args.hidden // 64).to(device, dtype)
    inputs = _inputs(model, args.text_tokens, device)
    arms = {
        "unpatched": None,
        "fastv_r0": fastvision.FastVConfig(k=args.k, ratio=0.0),
        "fastv": fastvision.FastVConfig(k=args.k, ratio=args.ratio),
    }

    def in_arm(name: str, fn: Any) -> Any:
        if arms[name] is None:
            return fn()
        with fastvision.patched(model, arms[name]):
            return fn()

    with torch.inference_mode():
        flops = {name: in_arm(name, lambda: measure_flops(lambda: _prefill(model, inputs))[0].total) for name in arms}
        for name in arms:  # warm-up
            in_arm(name, lambda: _prefill(model, inputs))
        prefill: dict[str, list[float]] = {name: [] for name in arms}
        decode: dict[str, list[float]] = {name: [] for name in arms}
        cache_bytes: dict[str, int] = {}
        names = list(arms)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotate the order
                seconds, decode_seconds, cache_bytes[name] = in_arm(
                    name, lambda: _timed_run(model, inputs, args.decode_tokens, device)
                )
                prefill[name].append(seconds)
                decode[name].append(decode_seconds)
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {prefill[n][-1]:.3f}s" for n in names))

    median = {name: statistics.median(times) for name, times in prefill.items()}
    decode_rate = {name: args.decode_tokens / statistics.median(times) for name, times in decode.items()}
    tokens = inputs["input_ids"].shape[1]
    kept = tokens - arms["fastv"].num_dropped(tokens - args.text_tokens)
    ideal_cache = (args.k * tokens + (args.layers - args.k) * kept) / (args.layers * tokens)
    flops_ratio = flops["fastv"] / flops["unpatched"]

    def paired(arm: str, times: dict[str, list[float]]) -> float:
        """Median over repeats of the arm's time over the unpatched time of the same repeat."""
        return statistics.median(a / b for a, b in zip(times[arm], times["unpatched"], strict=True))

    time_ratio = paired("fastv", prefill)
    return {
        "schema": SCHEMA,
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "dtype": str(dtype),
        },
        "setup": {
            "hidden": args.hidden,
            "layers": args.layers,
            "image_tokens": tokens - args.text_tokens,
            "text_tokens": args.text_tokens,
            "fastv": arms["fastv"].to_dict(),
            "repeats": args.repeats,
            "decode_tokens": args.decode_tokens,
        },
        "prefill_flops": flops,
        "prefill_seconds": prefill,
        "prefill_median_seconds": median,
        "decode_tokens_per_second": decode_rate,
        "kv_cache_bytes": cache_bytes,
        "ratios": {
            "prefill_flops": flops_ratio,
            "prefill_time": time_ratio,
            "prefill_time_over_flops": time_ratio / flops_ratio,
            "speedup_fraction_of_ideal": (1 / time_ratio) / (1 / flops_ratio),
            "prefill_time_ratio_of_medians": median["fastv"] / median["unpatched"],
            "ratio0_overhead": paired("fastv_r0", prefill),
            "decode_speed": 1 / paired("fastv", decode),
            "kv_cache": cache_bytes["fastv"] / cache_bytes["unpatched"],
            "kv_cache_ideal": ideal_cache,
        },
        "targets": {
            "prefill_time_over_flops_max": 1.03,
            "ratio0_overhead_max": 1.01,
            "decode_speed_min": 1.0,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="evals/results/bench_prefill.json")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--text-tokens", type=int, default=40)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: far less timing noise on shared machines; 0 = torch default)",
    )
    args = parser.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
