"""The wheel maps the top-level folders into the one ``fastvision`` namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_fastvision_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fastvision-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"fastvision"}
    for expected in (
        "fastvision/patches/token_reduction/llava.py",
        "fastvision/patches/fusion/uvit.py",
        "fastvision/fusion/config.py",
        "fastvision/fusion/method.py",
        "fastvision/fastv/method.py",
        "fastvision/methods.py",
        "fastvision/evals/bench_prefill.py",
        "fastvision/demo/app.py",
        "fastvision/evals/lm_eval_model.py",
        "fastvision/evals/tasks/easyvqa/easyvqa.yaml",
        "fastvision/evals/tasks/easyvqa/utils.py",
        "fastvision/bundled/easyvqa-llava/model.safetensors",
        "fastvision/bundled/easyvqa-llava/tokenizer.json",
        "fastvision/bundled/digits-llava/model.safetensors",
        "fastvision/bundled/digits-llava/processor_config.json",
        "fastvision/evals/digits_data.py",
    ):
        assert expected in names
    source_packages = {
        f"fastvision/{path.parent.relative_to(ROOT / 'fastvision').as_posix()}/__init__.py".replace("/./", "/")
        for path in (ROOT / "fastvision").rglob("__init__.py")
    }
    source_packages |= {
        f"fastvision/patches/{path.parent.relative_to(ROOT / 'patches').as_posix()}/__init__.py".replace("/./", "/")
        for path in (ROOT / "patches").rglob("__init__.py")
    }
    missing = sorted(package for package in source_packages if package not in names)
    assert not missing, f"packages left out of the wheel (add them to pyproject's packages): {missing}"
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "fastvision = fastvision.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
