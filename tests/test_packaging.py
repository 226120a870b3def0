"""The wheel maps the top-level folders into the one ``fastvision`` namespace, with the harness and the benchmarks
but none of the studies (``evals/experiments/``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_OUTPUTS = {".git", "build", "dist", ".venv", ".ci-venv", ".ci-venv-oldest", "results", ".whl"}  # at the root
CACHES = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def clean_copy(destination: Path) -> Path:
    """The sources without build outputs. setuptools reuses ``build/lib``, so a wheel built in the working tree would
    still ship modules moved or removed since the last build there."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        at_root = Path(folder) == ROOT
        return [name for name in names
                if name in CACHES or name.endswith(".egg-info") or (at_root and name in BUILD_OUTPUTS)]  # fmt: skip

    shutil.copytree(ROOT, destination, ignore=ignore)
    return destination


def test_wheel_installs_only_the_fastvision_namespace(tmp_path):
    source = clean_copy(tmp_path / "source")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*command, str(tmp_path)], check=True, capture_output=True)
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
        "fastvision/evals/benchmarks/__init__.py",
        "fastvision/evals/benchmarks/bench_prefill.py",
        "fastvision/evals/benchmarks/bench_backbones.py",
        "fastvision/evals/benchmarks/peak_memory.py",
        "fastvision/evals/easyvqa_breakdown.py",
        "fastvision/demo/app.py",
        "fastvision/evals/lm_eval_model.py",
        "fastvision/evals/charged_model.py",
        "fastvision/evals/lmms_eval_model.py",
        "fastvision/evals/lmms_plugin.py",
        "fastvision/evals/lmms_task_support.py",
        "fastvision/evals/lmms_tasks/easyvqa/easyvqa.yaml",
        "fastvision/evals/lmms_tasks/digits/utils.py",
        "fastvision/evals/tasks/easyvqa/easyvqa.yaml",
        "fastvision/evals/tasks/easyvqa/utils.py",
        "fastvision/bundled/easyvqa-llava/model.safetensors",
        "fastvision/bundled/easyvqa-llava/tokenizer.json",
        "fastvision/bundled/digits-llava/model.safetensors",
        "fastvision/bundled/digits-llava/processor_config.json",
        "fastvision/evals/digits_data.py",
    ):
        assert expected in names
    studies = ("fusion_experiment", "video_experiment", "seizure_experiment", "pruning_experiment", "tower_comparison",
               "easyvqa_probe")  # fmt: skip
    shipped_studies = [name for name in names if "experiments/" in name or any(study in name for study in studies)]
    assert not shipped_studies, f"studies are not shipped: {shipped_studies}"
    source_packages = {
        f"fastvision/{path.parent.relative_to(ROOT / 'fastvision').as_posix()}/__init__.py".replace("/./", "/")
        for path in (ROOT / "fastvision").rglob("__init__.py")
    }
    source_packages |= {
        f"fastvision/patches/{path.parent.relative_to(ROOT / 'patches').as_posix()}/__init__.py".replace("/./", "/")
        for path in (ROOT / "patches").rglob("__init__.py")
    }
    source_packages |= {
        f"fastvision/evals/{path.parent.relative_to(ROOT / 'evals').as_posix()}/__init__.py".replace("/./", "/")
        for path in (ROOT / "evals").rglob("__init__.py")
        if "experiments" not in path.relative_to(ROOT / "evals").parts
    }
    missing = sorted(package for package in source_packages if package not in names)
    assert not missing, f"packages left out of the wheel (add them to pyproject's packages): {missing}"
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    declared = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "fastvision = fastvision.cli.main:main" in declared
    assert "[lmms_eval.models]\nfastvision = fastvision.evals.lmms_plugin:MANIFEST" in declared
    assert "[lm_eval.models]\nfastvision = fastvision.evals.lm_eval_model:FastVisionLM" in declared
