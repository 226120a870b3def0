"""``fastvision demo``: the Gradio side-by-side demo (``demo/app.py``), offline on the bundled model by default."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Gradio demo: unpatched vs FastV answers, latency, FLOPs and the kept tokens on the image.",
        description="Launch the Gradio demo on 127.0.0.1 (offline, bundled easy-VQA LLaVA by default).",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, shared by ``fastvision demo`` and ``python demo/app.py``."""
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the bundled easy-VQA LLaVA)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=4, help="requests served at once (one model replica each)")


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"{error}; install the demo extra: pip install 'fastvision[demo]'.") from error
    from fastvision.demo.app import launch

    launch(args)
    return 0
