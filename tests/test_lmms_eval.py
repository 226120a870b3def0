"""The lmms-eval plugin: ``lmms-eval --model fastvision`` found through the ``lmms_eval.models`` entry point, run
offline on the bundled models with the package's ``easyvqa`` and ``digits`` task folders, and the ``lm_eval.models``
entry point of the lm-eval model.

lmms-eval is installed without its dependencies (they pull torchvision and a CUDA torch); CI sets
FASTVISION_REQUIRE_LMMS=1 so that a missing install fails here instead of skipping.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fastvision
from fastvision.bundled import BUNDLED_DIGITS_MODEL, BUNDLED_MODEL

LIMIT = 24


def _require_lmms() -> None:
    try:
        import lmms_eval.models  # noqa: F401
    except ModuleNotFoundError as error:
        if os.environ.get("FASTVISION_REQUIRE_LMMS") == "1":
            raise
        pytest.skip(f"lmms-eval is not installed ({error}); see docs/lm-eval.md for its --no-deps install")


def _lmms_tasks() -> Path:
    """The folder ``fastvision lmms-tasks`` prints, read from the command itself."""
    from fastvision.cli.lmms_cmd import lmms_tasks_folder

    printed = subprocess.run([sys.executable, "-m", "fastvision", "lmms-tasks"], capture_output=True, text=True)
    assert printed.returncode == 0 and Path(printed.stdout.strip()) == lmms_tasks_folder()
    assert (lmms_tasks_folder() / "easyvqa" / "easyvqa.yaml").is_file()
    return lmms_tasks_folder()


def _run_lmms_eval(tmp: Path, model: Path, task: str, extra: str = "fastv_k=2,fastv_ratio=0.5") -> dict[str, Any]:
    """``lmms-eval eval --model fastvision`` in a fresh offline process; its results JSON."""
    out = tmp / "results"
    command = [sys.executable, "-m", "lmms_eval", "eval", "--model", "fastvision",
               "--model_args", f"pretrained={model},{extra}", "--tasks", task, "--include_path", str(_lmms_tasks()),
               "--limit", str(LIMIT), "--batch_size", "1", "--output_path", str(out)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-3000:]
    (path,) = glob.glob(str(out / "*" / "*_results.json"))
    return json.loads(Path(path).read_text())


def _fastvision_eval_accuracy(model_path: Path, dataset: Any, **method: Any) -> float:
    """``fastvision eval``'s exact match of the patched model on ``dataset``."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from fastvision.evals.vqa import exact_match_accuracy

    model = LlavaForConditionalGeneration.from_pretrained(model_path).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    with fastvision.patched(model, **method):
        return exact_match_accuracy(model, processor, dataset)


@pytest.mark.parametrize(
    ("task", "model", "load"),
    [("easyvqa", BUNDLED_MODEL, "easyvqa"), ("digits", BUNDLED_DIGITS_MODEL, "digits")],
)
def test_lmms_eval_run_matches_fastvision_eval_and_reports_costs(
    task: str, model: Path, load: str, tmp_path: Path
) -> None:
    _require_lmms()
    from fastvision.evals.bundled_tasks import get_task

    results = _run_lmms_eval(tmp_path, model, task)
    accuracy = results["results"][task]["exact_match,none"]
    assert accuracy == pytest.approx(
        _fastvision_eval_accuracy(model, get_task(load).load("test", LIMIT), k=2, ratio=0.5)
    )
    report = results["throughput"]
    assert report["avg_fastvision_requests"] == LIMIT  # every request was charged, none lost to a swallowed error
    assert report["avg_fastvision_image_tokens_per_request"] == 144
    assert report["avg_fastvision_kept_image_tokens_per_request"] == 72
    assert 0.5 < report["avg_fastvision_relative_prefill_flops"] < 0.95
    assert report["avg_fastvision_prefill_ms_per_request"] > 0


def test_lmms_eval_dart_runs_and_counts_its_tokens(tmp_path: Path) -> None:
    _require_lmms()
    results = _run_lmms_eval(tmp_path, BUNDLED_MODEL, "easyvqa", "fastv_method=dart,fastv_ratio=0.75")
    assert results["throughput"]["avg_fastvision_kept_image_tokens_per_request"] == 36
    assert results["results"]["easyvqa"]["exact_match,none"] >= 0.8


def test_entry_point_registers_the_model_with_lmms_eval() -> None:
    _require_lmms()
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    assert "fastvision" in MODEL_REGISTRY_V2.list_model_names()
    from fastvision.evals.lmms_eval_model import FastVisionLMMS

    assert get_model("fastvision") is FastVisionLMMS


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"fastv_ratio": 1.5}, "ratio"),
        ({"fastv_kk": 2}, "Unknown fastvision model_args"),
        ({"fastv_method": "tome"}, "fastv_method='tome' is unknown"),
    ],
)
def test_bad_model_args_fail_before_loading(arguments: dict[str, Any], message: str) -> None:
    _require_lmms()
    from fastvision.evals.lmms_eval_model import FastVisionLMMS

    with pytest.raises(ValueError, match=message):
        FastVisionLMMS(pretrained="/nonexistent/model", device="cpu", **arguments)


def test_loglikelihood_is_refused_not_left_uncounted() -> None:
    _require_lmms()
    from fastvision.evals.lmms_eval_model import FastVisionLMMS

    model = FastVisionLMMS(pretrained=str(BUNDLED_MODEL), device="cpu", fastv_ratio=0.5)
    with pytest.raises(NotImplementedError, match="fastvision lm-eval"):
        model.loglikelihood([])
    fastvision.unpatch(model.model)  # the charged generate was set before patching, so unpatching keeps it
    assert vars(model.model)["generate"] == model._charged_generate


def test_lm_eval_entry_point_resolves_to_the_model_by_name() -> None:
    """The ``lm_eval.models`` entry point, put into lm-eval's own model registry the way a plugin-discovering lm-eval
    puts each one (a lazy EntryPoint placeholder, before the module is imported), resolves ``fastvision`` to the
    lm-eval model, and importing the module then does not collide with the placeholder."""
    pytest.importorskip("lm_eval")
    code = """
import inspect
from importlib.metadata import entry_points
from lm_eval.api import registry
(point,) = [p for p in entry_points().select(group="lm_eval.models") if p.name == "fastvision"]
keyword = "target" if "target" in inspect.signature(registry.model_registry.register).parameters else "lazy"
registry.model_registry.register("fastvision", **{keyword: point})
model = registry.get_model("fastvision")
import fastvision.evals.lm_eval_model as module
assert registry.get_model("fastvision") is model is module.FastVisionLM
print(model.__module__, model.__name__)
"""
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert finished.stdout.split() == ["fastvision.evals.lm_eval_model", "FastVisionLM"], finished.stderr[-2000:]


def test_the_lm_eval_task_folder_is_printed_for_plain_lm_eval() -> None:
    from fastvision.cli.lm_eval_cmd import tasks_folder

    command = [sys.executable, "-m", "fastvision", "lmms-tasks", "--harness", "lm-eval"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0 and Path(printed.stdout.strip()) == tasks_folder()
    assert (tasks_folder() / "easyvqa" / "easyvqa.yaml").is_file()


def _lm_eval_discovers_plugins() -> bool:
    """Whether the installed lm-eval reads the ``lm_eval.models`` entry-point group (lm-eval 0.4.x does not)."""
    import lm_eval.api.registry

    source = inspect.getsource(lm_eval.api.registry)
    return "entry_points(" in source and "lm_eval.models" in source


def test_lm_eval_finds_the_model_by_name_where_it_reads_entry_points() -> None:
    pytest.importorskip("lm_eval")
    if not _lm_eval_discovers_plugins():
        pytest.skip("this lm-eval has no plugin discovery; `fastvision lm-eval` registers the model (test_lm_eval.py)")
    code = "from lm_eval.api.registry import get_model; print(get_model('fastvision').__module__)"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert finished.stdout.strip() == "fastvision.evals.lm_eval_model", finished.stderr[-2000:]


def test_a_request_failing_inside_generate_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """lmms-eval's chat loop catches errors of ``generate`` and records an empty answer; the model raises afterwards
    instead, and the failed requests add nothing to the costs."""
    _require_lmms()
    import torch
    from lmms_eval.models.chat.llava_hf import LlavaHf

    from fastvision.evals.lmms_eval_model import FastVisionLMMS

    model = FastVisionLMMS(pretrained=str(BUNDLED_MODEL), device="cpu", fastv_ratio=0.5)

    def swallowing_loop(self: Any, requests: list[Any]) -> list[str]:  # what lmms-eval's loop does with an error
        for _ in requests:
            try:
                self.model.generate(input_ids=torch.ones(1, 3, dtype=torch.long), num_beams=2, max_new_tokens=1)
            except Exception:
                pass
        return [""] * len(requests)

    monkeypatch.setattr(LlavaHf, "generate_until", swallowing_loop)
    with pytest.raises(RuntimeError, match="2 of 2 requests failed inside generate"):
        model.generate_until([object(), object()])
    assert model.costs.requests == 0
