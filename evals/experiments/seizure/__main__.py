"""``python -m evals.experiments.seizure``: VSViG on synthetic skeleton recordings, streamed as a live detector."""

from __future__ import annotations

import argparse
import dataclasses

from evals.experiments.command import positive_int, run_reporting_errors, write_results

PROG = "python -m evals.experiments.seizure"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train VSViG-Light (arXiv 2311.14775) on synthetic skeleton-patch recordings with seizure onsets, "
        "then stream held-out recordings through it and the decision rule: clip accuracy, detection latency and "
        "false alarms.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default 300)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--out", default="fastvision-seizure", help="output folder (results.json, seizure.png)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def run(args: argparse.Namespace) -> int:
    from evals.experiments.seizure.experiment import QUICK, SeizureRunSettings, run_seizure_experiment, seizure_plot

    settings = QUICK if args.quick else SeizureRunSettings()
    settings = dataclasses.replace(settings, threads=args.threads, progress=not args.quiet,
                                   steps=args.steps or settings.steps)  # fmt: skip
    results = run_seizure_experiment(settings)
    out = write_results(args.out, results, lambda path: seizure_plot(results, path), "seizure.png")
    detection = results["detection"]
    print(f"clip accuracy {results['clip_accuracy']:.3f}; detected {detection['detected']}/{detection['seizures']} "
          f"seizures, median latency {detection['median_latency_s']} s, {detection['false_alarms']} false alarms in "
          f"{detection['hours_monitored'] * 60:.1f} min of seizure-free monitoring")  # fmt: skip
    print(f"wrote {out / 'results.json'} and {out / 'seizure.png'} ({results['duration_seconds'] / 60:.1f} min)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
