"""The documentation: a README a newcomer reads in minutes, every page in the site's navigation, and the code a page
shows runs as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

import fastvision
from fastvision.methods import _METHODS

ROOT = Path(__file__).resolve().parents[1]
README_LINE_LIMIT = 250


def test_the_readme_stays_short_and_keeps_its_two_set_up_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_LINE_LIMIT
    assert 'pip install torch==2.13.0 && pip install -e ".[eval]" && fastvision eval' in readme
    assert (
        'pip install torch==2.13.0 && pip install -e ".[dev]" && pip install --no-deps "lmms-eval>=0.7.3,<0.8" '
        "&& python -m pytest" in readme
    )
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_every_page_is_in_the_site_navigation() -> None:
    navigation = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert pages and [page for page in pages if f" {page}" not in navigation] == []


def test_the_methods_page_example_registers_a_working_method() -> None:
    page = (ROOT / "docs" / "methods.md").read_text()
    example = re.search(r"## Adding a method.*?```python\n(.*?)```", page, re.S).group(1)
    namespace: dict = {}
    try:
        exec(compile(example, "docs/methods.md", "exec"), namespace)
        layer, x = namespace["layer"], torch.randn(2, 3)
        patched_output = layer(x)
        fastvision.unpatch(layer)
        assert torch.allclose(patched_output, layer(x) * 3.0)
        with fastvision.patched(layer, factor=0.5):
            assert torch.allclose(layer(x), patched_output / 6.0)
    finally:
        _METHODS.pop(namespace.get("ScaleConfig"), None)


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """mkdocs with mkdocstrings: a broken link, anchor or docstring reference fails the build (CI runs it too)."""
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    home = (tmp_path / "index.html").read_text()
    assert 'src="evals/results/easyvqa/pareto.png"' in home and (tmp_path / "evals/results/easyvqa/pareto.png").exists()
    assert "fastvision.methods.register_method" in (tmp_path / "api" / "index.html").read_text()
