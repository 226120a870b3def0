"""The lm-eval model ``fastvision`` and ``fastvision lm-eval``: offline runs on the bundled model with the package's
``easyvqa`` task, plain, data-parallel over two CPU processes and with a disk-offloaded ``device_map``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lm_eval")

import fastvision
from fastvision.bundled import BUNDLED_MODEL

LIMIT = 24
MODEL_ARGS = f"pretrained={BUNDLED_MODEL},fastv_k=2,fastv_ratio=0.5"
COMMON = ["--model", "fastvision", "--tasks", "easyvqa", "--limit", str(LIMIT), "--device", "cpu",
          "--apply_chat_template", "--batch_size", "8"]  # fmt: skip


def _run_lm_eval(tmp: Path, model_args: str, launcher: list[str] | None = None) -> dict[str, Any]:
    """Run ``fastvision lm-eval`` in a fresh process (offline) and return its results JSON."""
    out = tmp / "results"
    command = [*(launcher or [sys.executable]), "-m", "fastvision.cli.main", "lm-eval", *COMMON,
               "--model_args", model_args, "--output_path", str(out)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "ACCELERATE_USE_CPU": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    finished = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_lm_eval(tmp_path_factory.mktemp("plain"), MODEL_ARGS)


def _first_questions_reference() -> tuple[float, float]:
    """Exact match of the patched bundled model on the same questions through fastvision's own harness, and the
    relative prefill FLOPs of the first question measured directly."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from fastvision.evals.data import load_easyvqa
    from fastvision.evals.vqa import encode_batch, exact_match_accuracy
    from fastvision.flops import measure_flops

    model = LlavaForConditionalGeneration.from_pretrained(BUNDLED_MODEL).eval()
    processor = AutoProcessor.from_pretrained(BUNDLED_MODEL)
    dataset = load_easyvqa("test", limit=LIMIT)
    inputs = encode_batch(processor, dataset[:1]["image"], dataset[:1]["question"])
    with torch.no_grad():
        base = measure_flops(lambda: model(**inputs, logits_to_keep=1, use_cache=False))[0].total
        with fastvision.patched(model, k=2, ratio=0.5):
            accuracy = exact_match_accuracy(model, processor, dataset)
            pruned = measure_flops(lambda: model(**inputs, logits_to_keep=1, use_cache=False))[0].total
    return accuracy, pruned / base


def test_offline_run_reports_accuracy_and_flops(plain_run: dict[str, Any]) -> None:
    accuracy = plain_run["results"]["easyvqa"]["exact_match,none"]
    report = plain_run["config"]["fastvision"]
    reference_accuracy, reference_relative = _first_questions_reference()
    assert accuracy == pytest.approx(reference_accuracy)  # generate_until answers as the one-step harness does
    assert accuracy >= 0.8
    assert report["config"]["k"] == 2 and report["config"]["ratio"] == 0.5
    assert report["requests"] == LIMIT
    assert report["image_tokens_per_request"] == 144 and report["kept_image_tokens_per_request"] == 72
    assert report["relative_prefill_flops"] == pytest.approx(reference_relative, abs=0.01)  # batches pad a little
    assert report["prefill_ms_per_request"] > 0 and report["baseline_prefill_ms_per_request"] > 0


def test_card_from_lm_eval_results_round_trips(plain_run: dict[str, Any], tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from fastvision.evals.card_sources import load_card_source
    from fastvision.evals.model_card import write_card

    path = tmp_path / "results.json"
    path.write_text(json.dumps(plain_run))
    readme = write_card(load_card_source(path), tmp_path / "card", base_model="llava-hf/llava-1.5-7b-hf")
    card = ModelCard.load(readme)
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    values = {(r.metric_config, r.metric_type): r.metric_value for r in results}
    assert values == {
        ("fastv K=2 R=0.5", "exact_match"): plain_run["results"]["easyvqa"]["exact_match,none"],
        ("fastv K=2 R=0.5", "relative_prefill_flops"): plain_run["config"]["fastvision"]["relative_prefill_flops"],
    }
    assert card.data.base_model == "llava-hf/llava-1.5-7b-hf"
    assert "fastvision lm-eval --model fastvision" in card.text


def test_two_cpu_processes_split_the_requests_and_sum_the_costs(plain_run: dict[str, Any], tmp_path: Path) -> None:
    """``accelerate launch`` starts processes through torch.distributed.run; on CPU, ACCELERATE_USE_CPU=1 does the
    rest. The requests are split over the two processes and the costs summed, so the totals match one process."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    split = _run_lm_eval(tmp_path, MODEL_ARGS, launcher)
    assert split["results"]["easyvqa"]["exact_match,none"] == plain_run["results"]["easyvqa"]["exact_match,none"]
    report, plain = split["config"]["fastvision"], plain_run["config"]["fastvision"]
    assert report["requests"] == LIMIT
    assert report["kept_image_tokens_per_request"] == plain["kept_image_tokens_per_request"]
    assert report["relative_prefill_flops"] == pytest.approx(plain["relative_prefill_flops"], abs=0.01)


def test_disk_offloaded_device_map_gives_the_same_results(plain_run: dict[str, Any], tmp_path: Path) -> None:
    """``parallelize=True`` loads with ``device_map="auto"``; a 2 MB memory cap offloads part of the 3.7 MB model to
    disk, as a model larger than its devices would be, and accelerate's hooks run beside fastvision's."""
    model_args = f"{MODEL_ARGS},parallelize=True,max_cpu_memory=2000000,offload_folder={tmp_path / 'offload'}"
    offloaded = _run_lm_eval(tmp_path, model_args)
    from fastvision.evals.lm_eval_model import FastVisionLM

    loaded = FastVisionLM(pretrained=str(BUNDLED_MODEL), device="cpu", parallelize=True, max_cpu_memory=2000000,
                          offload_folder=str(tmp_path / "offload"), fastv_k=2, fastv_ratio=0.5)  # fmt: skip
    assert any(parameter.device.type == "meta" for parameter in loaded.model.parameters())  # some weights on disk
    assert any(hasattr(module, "_hf_hook") for module in loaded.model.modules())  # accelerate's hooks are in place
    assert offloaded["results"]["easyvqa"] == plain_run["results"]["easyvqa"]
    report, plain = offloaded["config"]["fastvision"], plain_run["config"]["fastvision"]
    assert report["prefill_flops_per_request"] == plain["prefill_flops_per_request"]
    assert report["baseline_prefill_flops_per_request"] == plain["baseline_prefill_flops_per_request"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"fastv_ratio": 1.5}, "ratio"),
        ({"fastv_k": 0}, "k"),
        ({"fastv_scoring": "best"}, "scoring"),
        ({"fastv_kk": 2}, "Unknown fastvision model_args ['fastv_kk']"),
        ({"fastv_method": "tome"}, "fastv_method='tome' is unknown; allowed: fastv, dart, divprune, visionzip"),
        ({"fastv_method": "dart", "fastv_scoring": "mean"}, "do not apply to fastv_method=dart"),
        ({"fastv_method": "divprune", "fastv_k": 2}, "['fastv_k'] do not apply to fastv_method=divprune"),
        ({"fastv_measure": "yes"}, "fastv_measure must be true or false"),
    ],
)
def test_bad_model_args_fail_before_loading(arguments: dict[str, Any], message: str) -> None:
    from fastvision.evals.lm_eval_model import FastVisionLM

    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FastVisionLM(pretrained="/nonexistent/model", device="cpu", **arguments)


def test_cli_reports_bad_model_args_with_exit_code_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fastvision.cli.main import main

    code = main(["lm-eval", *COMMON, "--model_args", f"pretrained={BUNDLED_MODEL},fastv_ratio=2",
                 "--output_path", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "ratio" in capsys.readouterr().err


def test_task_folder_is_added_next_to_a_users_include_path(tmp_path: Path) -> None:
    from fastvision.cli.lm_eval_cmd import parse_arguments, tasks_folder

    assert (tasks_folder() / "easyvqa" / "easyvqa.yaml").is_file()
    _, args = parse_arguments([*COMMON, "--include_path", str(tmp_path)])
    assert args.command == "run"  # lm-eval's legacy form, no sub-command, still means "run"
    assert args.include_path == [str(tasks_folder()), str(tmp_path)]
    assert args.tasks == ["easyvqa"] and args.model == "fastvision"


def test_fastv_method_selects_dart_and_divprune() -> None:
    from fastvision.evals.lm_eval_model import FastVisionLM, fastv_config_from_arguments

    config, measure = fastv_config_from_arguments({"fastv_method": "dart", "fastv_k": 2, "fastv_ratio": 0.75})
    assert config == fastvision.DARTConfig(k=2, ratio=0.75) and measure
    model = FastVisionLM(pretrained=str(BUNDLED_MODEL), device="cpu", fastv_method="dart", fastv_ratio=0.75)
    assert fastvision.patch_config(model.model) == fastvision.DARTConfig(k=2, ratio=0.75)
    config, _ = fastv_config_from_arguments({"fastv_method": "divprune", "fastv_ratio": 0.9})
    assert config == fastvision.DivPruneConfig(ratio=0.9)
    config, _ = fastv_config_from_arguments({"fastv_method": "visionzip", "fastv_ratio": 0.9})
    assert config == fastvision.VisionZipConfig(ratio=0.9)
