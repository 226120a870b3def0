"""Layering only downward: the core (engine, methods, backbones, CLI) imports neither the harness nor the demo.

Every module of ``fastvision`` and ``fastvision.patches`` is imported, and the command line's parser is built, in a
fresh interpreter where importing the harness (``fastvision.evals``, ``evals``) or the demo (``fastvision.demo``,
``demo``) raises. Commands that run the harness import it inside the function that runs them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    HIDDEN = ("fastvision.evals", "fastvision.demo", "evals", "demo")

    class HideTheHarness(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == hidden or name.startswith(hidden + ".") for hidden in HIDDEN):
                raise ModuleNotFoundError(f"the core imported {name}")
            return None

    sys.meta_path.insert(0, HideTheHarness())
    import fastvision
    import fastvision.patches

    names = []
    for package in (fastvision, fastvision.patches):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.startswith(HIDDEN):
                names.append(module.name)
                importlib.import_module(module.name)
    from fastvision.cli.main import build_parser

    build_parser().format_help()
    print(len(names))
    """
)


def test_the_core_imports_neither_the_harness_nor_the_demo() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = int(result.stdout.split()[-1])
    assert imported > 60  # every module of the core was reached, not an empty walk
