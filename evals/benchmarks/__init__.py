"""Benchmarks of the engine and the backbones (prefill speed, deployed forms) and the peak-memory counter they share
with the studies: each writes a JSON file (``python -m fastvision.evals.benchmarks.<name> --help``)."""
