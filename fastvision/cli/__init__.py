"""The ``fastvision`` command line."""
