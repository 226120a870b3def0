"""The evaluation harness and benchmarks (installed as ``fastvision.evals``)."""
