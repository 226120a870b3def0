"""Speed of each re-parameterisable backbone's deployed form against its training form (issue #8).

Both forms run the same input, interleaved within every repeat in rotating order; the reported speed-up is the median
over repeats of the paired per-repeat time ratios (shared machines are noisy, so no absolute time is compared across
runs). The deployed outputs are checked against the training form's before timing.

    python -m fastvision.evals.benchmarks.bench_backbones --out evals/results/bench_backbones_cpu.json
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

SCHEMA = "fastvision.bench_backbones/1"
DEFAULT_BACKBONES = ("repmlpnet_t224", "repmlpnet_b224", "vheat_tiny", "vheat_small")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(model: torch.nn.Module, x: torch.Tensor) -> float:
    _sync(x.device)
    start = time.perf_counter()
    model(x)
    _sync(x.device)
    return time.perf_counter() - start


@torch.inference_mode()
def bench_backbone(
    name: str, *, batch: int, repeats: int, device: torch.device, img_size: int | None = None
) -> dict[str, Any]:
    from fastvision.backbones import create_backbone, reparameterize

    torch.manual_seed(0)
    kwargs = {} if img_size is None else {"img_size": img_size}
    training = create_backbone(name, **kwargs).eval().to(device)
    deployed = reparameterize(training)
    size = training.default_cfg["input_size"]
    x = torch.randn(batch, *size, device=device)
    reference, output = training(x), deployed(x)
    relative_error = ((output - reference).abs().max() / reference.abs().max()).item()
    arms = {"training": training, "deployed": deployed}
    for model in arms.values():  # warm-up
        model(x)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    order = list(arms)
    for repeat in range(repeats):
        for arm in order[repeat % 2 :] + order[: repeat % 2]:
            times[arm].append(_timed(arms[arm], x))
    ratios = [d / t for d, t in zip(times["deployed"], times["training"], strict=True)]
    return {
        "backbone": name,
        "input_size": list(size),
        "batch": batch,
        "params": {arm: sum(p.numel() for p in model.parameters()) for arm, model in arms.items()},
        "median_ms": {arm: 1000 * statistics.median(values) for arm, values in times.items()},
        "deployed_time_ratio": statistics.median(ratios),
        "deployed_speedup": 1 / statistics.median(ratios),
        "max_relative_output_difference": relative_error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--img-size", type=int, default=None, help="default: each backbone's design size")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is the steadiest)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("evals/results/bench_backbones.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.backbones:
        row = bench_backbone(name, batch=args.batch, repeats=args.repeats, device=device, img_size=args.img_size)
        print(f"{name}: deployed {row['median_ms']['deployed']:.1f} ms vs training {row['median_ms']['training']:.1f}"
              f" ms, paired speed-up {row['deployed_speedup']:.3f}x, outputs within "
              f"{row['max_relative_output_difference']:.1e}", flush=True)  # fmt: skip
        rows.append(row)
    result = {
        "schema": SCHEMA,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
