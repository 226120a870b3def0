"""``python -m fastvision``: the same command line as the ``fastvision`` console script."""

from __future__ import annotations

import sys

from fastvision.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
