"""The studies run on top of the harness, one package per study (see README.md): not shipped in the wheel.

Each runs from the repository root as ``python -m evals.experiments.<study>`` and imports the harness and the
benchmarks as ``fastvision.evals...``, the core as ``fastvision...``, and its own modules as
``evals.experiments.<study>.<module>``.
"""
