"""FastVConfig serialisation and the cost of ``import fastvision``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastvision import FastVConfig


def test_config_round_trips_through_json():
    config = FastVConfig(k=3, ratio=0.75, scoring="mean")
    data = json.loads(json.dumps(config.to_dict()))
    assert data == {
        "method": "fastv",
        "version": 1,
        "k": 3,
        "ratio": 0.75,
        "scoring": "mean",
        "modality": "all",
        "seed": 0,
        "schedule": None,
    }
    assert FastVConfig.from_dict(data) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "tome", "k": 2}, "Not a FastV config"),
        ({"method": "fastv", "version": 99}, "version 99 is not supported"),
        ({"k": 2, "layers": 3}, r"Unknown FastV config keys \['layers'\]"),
        ({"k": 2, "ratio": 1.5}, "0 <= ratio < 1"),
    ],
)
def test_config_from_bad_dict_raises(data, message):
    with pytest.raises(ValueError, match=message):
        FastVConfig.from_dict(data)


@pytest.mark.parametrize(("ratio", "n", "dropped"), [(0.5, 576, 288), (0.3, 10, 3), (0.75, 5, 3), (0.0, 9, 0)])
def test_num_dropped_is_floor_of_ratio_times_n(ratio, n, dropped):
    assert FastVConfig(ratio=ratio).num_dropped(n) == dropped


def test_import_is_lean():
    code = (
        "import sys, fastvision; fastvision.supported_model_types(); "
        "print(sorted(m for m in ('gradio', 'lm_eval', 'datasets', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_patch_accepts_a_config_object():
    import fastvision
    from fastvision.testing import tiny_llava

    model = tiny_llava("llama")
    config = FastVConfig.from_dict({"method": "fastv", "version": 1, "k": 3, "ratio": 0.25, "scoring": "mean"})
    assert fastvision.patch(model, config) is model
    assert fastvision.patch_config(model) is config
    assert fastvision.unpatch(model) is model and not fastvision.is_patched(model)


def test_python_dash_m_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "fastvision", "--help"], capture_output=True, text=True, check=True)
    assert "usage: fastvision" in out.stdout and "eval" in out.stdout
