"""The Gradio demo, launched headless on 127.0.0.1 with the bundled model: gradio_client checks of the answers, the
numbers and the heatmap, friendly refusals, 8 simultaneous requests, and a real browser (Debian chromium through
Python playwright) that uploads an image and saves a screenshot."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import urlopen

import psutil  # installed with accelerate
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings
gradio = pytest.importorskip("gradio")

from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

from fastvision.cli.eval_cmd import load_model_for_eval  # noqa: E402
from fastvision.demo.app import build_demo, launch_demo  # noqa: E402
from fastvision.demo.inference import DemoEngine  # noqa: E402
from fastvision.evals.data import load_easyvqa  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def engine() -> DemoEngine:
    model, processor, _ = load_model_for_eval(None)
    return DemoEngine(model, processor, concurrency=4)


@pytest.fixture(scope="module")
def questions(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str]]:
    """(image path, question, answer) for 8 easy-VQA test questions on 8 different images."""
    folder = tmp_path_factory.mktemp("images")
    test = load_easyvqa("test", limit=120)
    rows, seen = [], set()
    for row in test:
        if row["image_id"] not in seen and len(rows) < 8:
            seen.add(row["image_id"])
            path = folder / f"{row['image_id']}.png"
            row["image"].save(path)
            rows.append((str(path), row["question"], row["answer"]))
    assert len(rows) == 8
    return rows


@pytest.fixture(scope="module")
def server(engine: DemoEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    demo = build_demo(engine, concurrency=4, examples_folder=tmp_path_factory.mktemp("examples"))
    launch_demo(demo, host="127.0.0.1", port=_free_port(), block=False)
    try:
        yield demo.local_url
    finally:
        demo.close()


def _ask(
    client: Client, path: str, question: str, k: int = 2, ratio: float = 0.5, method: str = "last"
) -> tuple[Any, ...]:
    return client.predict(handle_file(path), question, k, ratio, method, api_name="/compare")


@pytest.mark.parametrize("method", ["dart", "divprune", "visionzip"])
def test_the_method_selector_runs_the_other_methods(
    server: str, engine: DemoEngine, questions: list[tuple[str, str, str]], method: str
) -> None:
    path, question, _ = questions[0]
    *_, numbers = _ask(Client(server, verbose=False), path, question, ratio=0.75, method=method)
    assert numbers["config"]["method"] == method and numbers["kept_image_tokens"] == 36
    assert numbers["kept_positions"] == engine.compare(path, question, 2, 0.75, method).kept_positions


def test_demo_binds_to_localhost(server: str) -> None:
    """The app serves on the loopback address it was given, on a real listening port, and nowhere else."""
    url = urlparse(server)
    assert (url.scheme, url.hostname) == ("http", "127.0.0.1") and url.port is not None
    with urlopen(server, timeout=30) as response:  # the page itself answers
        assert response.status == 200 and b"gradio" in response.read().lower()
    listening = [
        connection.laddr
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == url.port
    ]
    assert listening and all(address.ip == "127.0.0.1" for address in listening)


def test_client_gets_both_answers_the_numbers_and_the_heatmap(
    server: str, engine: DemoEngine, questions: list[tuple[str, str, str]]
) -> None:
    path, question, answer = questions[0]
    baseline, fastv, summary, heatmap, numbers = _ask(Client(server, verbose=False), path, question)
    direct = engine.compare(path, question, 2, 0.5)
    assert (baseline, fastv) == (direct.baseline.answer, direct.fastv.answer)
    assert baseline == answer  # the bundled model gets this one right
    assert numbers["baseline"]["prefill_flops"] == direct.baseline.prefill_flops
    assert numbers["fastv"]["prefill_flops"] == direct.fastv.prefill_flops
    assert numbers["flops_ratio"] == pytest.approx(direct.fastv.prefill_flops / direct.baseline.prefill_flops)
    assert numbers["flops_ratio"] < 0.9
    assert numbers["image_tokens"] == 144 and numbers["kept_image_tokens"] == 72
    assert numbers["kept_positions"] == direct.kept_positions
    assert numbers["baseline"]["prefill_ms"] > 0 and numbers["fastv"]["prefill_ms"] > 0
    assert "prefill FLOPs" in summary
    with Image.open(heatmap) as picture:
        assert picture.size == (384, 384)


@pytest.mark.parametrize(
    ("make_input", "question", "message"),
    [
        ("image", "   ", "Please type a question"),
        ("text", "what shape is in the image?", "not an image"),
        ("huge", "what shape is in the image?", "the limit is"),
    ],
)
def test_bad_inputs_get_a_friendly_message(
    server: str, questions: list[tuple[str, str, str]], tmp_path: Path, make_input: str, question: str, message: str
) -> None:
    path = questions[0][0]
    if make_input == "text":
        path = str(tmp_path / "notes.png")
        Path(path).write_text("this is not an image")
    elif make_input == "huge":
        path = str(tmp_path / "huge.png")
        Image.new("RGB", (4200, 4200), (200, 10, 10)).save(path)
    with pytest.raises(Exception, match=message) as failure:
        _ask(Client(server, verbose=False), path, question)
    assert "Traceback" not in str(failure.value)


def test_eight_simultaneous_requests_each_get_their_own_result(
    server: str, engine: DemoEngine, questions: list[tuple[str, str, str]]
) -> None:
    ratios = [0.25, 0.5, 0.75, 0.9, 0.25, 0.5, 0.75, 0.9]
    expected = [
        engine.compare(path, question, 2, ratio) for (path, question, _), ratio in zip(questions, ratios, strict=True)
    ]
    client = Client(server, verbose=False)
    jobs = [
        client.submit(handle_file(path), question, 2, ratio, "last", api_name="/compare")
        for (path, question, _), ratio in zip(questions, ratios, strict=True)
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: job.result(timeout=300), jobs))
    for result, direct in zip(results, expected, strict=True):
        baseline, fastv, _, _, numbers = result
        assert (baseline, fastv) == (direct.baseline.answer, direct.fastv.answer)
        assert numbers["kept_positions"] == direct.kept_positions
        assert numbers["config"]["ratio"] == direct.config["ratio"]


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def test_real_browser_uploads_an_image_and_sees_both_answers_and_the_heatmap(
    server: str, questions: list[tuple[str, str, str]], tmp_path: Path
) -> None:
    """Debian's chromium driven by playwright (no browser download). FASTVISION_REQUIRE_BROWSER=1 (set by CI) turns
    a missing browser into a failure; FASTVISION_SCREENSHOT=PATH keeps the screenshot (the one docs/demo.md shows)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    if executable is None:
        if os.environ.get("FASTVISION_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt install chromium)")
        pytest.skip("chromium is not installed")
    path, question, answer = questions[0]
    screenshot = Path(os.environ.get("FASTVISION_SCREENSHOT", tmp_path / "demo.png"))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server)
        page.locator("#image input[type=file]").set_input_files(path)
        page.locator("#question textarea").fill(question)
        page.locator("#run").click()
        baseline = page.locator("#baseline-answer textarea")
        fastv = page.locator("#fastv-answer textarea")
        sync_api.expect(baseline).to_have_value(answer, timeout=60_000)
        sync_api.expect(fastv).not_to_have_value("", timeout=60_000)
        heatmap = page.locator("#heatmap img")
        sync_api.expect(heatmap).to_be_visible(timeout=60_000)
        assert heatmap.evaluate("image => image.naturalWidth") == 384
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 10_000
