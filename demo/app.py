"""The Gradio demo: one question answered with and without FastV, side by side, with the kept tokens on the image.

``fastvision demo`` or ``python demo/app.py``; offline on the bundled easy-VQA LLaVA by default, ``--model`` for any
supported VLM. It binds to 127.0.0.1 unless ``--host``/``--share`` say otherwise. Requests run through Gradio's
queue, ``--concurrency`` at a time, each on its own model replica (see ``inference.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastvision.demo.heatmap import kept_token_heatmap
from fastvision.demo.inference import DemoEngine, DemoInputError
from fastvision.fastv.config import SCORINGS

BASELINES = tuple(scoring for scoring in SCORINGS if scoring not in ("last", "mean"))
# FastV's scorings, the other token-reduction methods, then the baselines
DEMO_METHODS = ("last", "mean", "dart", "divprune", "visionzip", *BASELINES)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline by default: no usage pings to Gradio's servers

INTRO = """# fastvision: FastV side by side
The same question answered by the unpatched model and by FastV (Chen et al., ECCV 2024), which drops the fraction
*ratio* of image tokens that got the least attention at layer *K*. Latencies are single-question prefills (median of 3)
on this machine; FLOPs are counted with `FlopCounterMode`. The heatmap colours each image token by the rank of its FastV
score (bright = most attended); dark cells were dropped."""


def example_images(folder: Path, easyvqa: int = 4) -> list[list[Any]]:
    """Example rows (image path, question): easy-VQA test images and scikit-image's sample photos, written to
    ``folder`` as PNGs. Sources that are not installed are skipped."""
    rows: list[list[Any]] = []
    try:
        from fastvision.evals.data import load_easyvqa

        test = load_easyvqa("test", limit=easyvqa * 10)
        seen: set[int] = set()
        for row in test:  # one question per image, on different images
            if row["image_id"] in seen or len(seen) == easyvqa:
                continue
            seen.add(row["image_id"])
            path = folder / f"easyvqa-{row['image_id']}.png"
            row["image"].save(path)
            rows.append([str(path), row["question"]])
    except ModuleNotFoundError:
        pass
    try:
        from PIL import Image
        from skimage import data

        for name, question in (("astronaut", "what color is the shape?"), ("coffee", "what shape is in the image?")):
            path = folder / f"skimage-{name}.png"
            Image.fromarray(getattr(data, name)()).save(path)
            rows.append([str(path), question])
    except ModuleNotFoundError:
        pass
    return rows


def summary_markdown(numbers: dict[str, Any]) -> str:
    base, fastv = numbers["baseline"], numbers["fastv"]
    return (
        "| | unpatched | FastV | FastV / unpatched |\n|---|---:|---:|---:|\n"
        f"| prefill latency | {base['prefill_ms']:.1f} ms | {fastv['prefill_ms']:.1f} ms | "
        f"{numbers['latency_ratio']:.2f} |\n"
        f"| prefill FLOPs | {base['prefill_flops'] / 1e9:.3f} G | {fastv['prefill_flops'] / 1e9:.3f} G | "
        f"{numbers['flops_ratio']:.3f} |\n"
        f"| image tokens after layer K | {numbers['image_tokens']} | {numbers['kept_image_tokens']} | "
        f"{numbers['kept_image_tokens'] / numbers['image_tokens']:.2f} |"
    )


def _lenient(image: Any) -> Any:
    """Make an image input hand an unreadable upload to the handler instead of failing in Gradio's preprocessing, so
    the user gets the demo's own message ("not an image that can be read") rather than Gradio's internal error.
    (Wrapping the instance, not subclassing: Gradio writes a ``.pyi`` stub beside every component subclass.)"""
    strict = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return strict(payload)
        except Exception:
            return getattr(payload, "path", None) or payload

    image.preprocess = preprocess
    return image


def build_demo(engine: DemoEngine, concurrency: int = 4, examples_folder: Path | None = None) -> Any:
    import gradio as gr

    def compare(image: Any, question: str, k: float, ratio: float, method: str) -> tuple[Any, ...]:
        try:
            result = engine.compare(image, question, int(k), float(ratio), method)
        except (DemoInputError, ValueError, TypeError) as error:
            raise gr.Error(str(error)) from None
        except Exception as error:  # never a traceback in the UI
            raise gr.Error(f"The model failed on this input ({type(error).__name__}: {error}).") from None
        numbers = result.to_dict()
        heatmap = kept_token_heatmap(result.view, result.scores, result.kept_positions)
        return result.baseline.answer, result.fastv.answer, summary_markdown(numbers), heatmap, numbers

    with gr.Blocks(title="fastvision: FastV side by side") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                image = _lenient(gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"],
                                          height=280, elem_id="image"))  # fmt: skip
                question = gr.Textbox(label="Question", placeholder="what shape is in the image?", elem_id="question")
                k = gr.Slider(1, engine.num_layers - 1, value=min(2, engine.num_layers - 1), step=1,
                              label="K: prune after this layer")  # fmt: skip
                ratio = gr.Slider(0.0, 0.95, value=0.5, step=0.05, label="ratio: fraction of image tokens dropped")
                method = gr.Radio(list(DEMO_METHODS), value="last", label="method: FastV's scoring (last, mean), DART, "
                                  "DivPrune, VisionZip (before the LM), or a baseline")  # fmt: skip
                run = gr.Button("Compare", variant="primary", elem_id="run")
            with gr.Column():
                with gr.Row():
                    baseline_answer = gr.Textbox(label="Unpatched answer", elem_id="baseline-answer")
                    fastv_answer = gr.Textbox(label="FastV answer", elem_id="fastv-answer")
                summary = gr.Markdown(elem_id="summary")
                heatmap = gr.Image(label="Kept image tokens (colour: FastV score rank; dark = dropped)", type="pil",
                                   elem_id="heatmap")  # fmt: skip
                numbers = gr.JSON(label="Measured numbers", elem_id="numbers")
        rows = example_images(examples_folder or Path(tempfile.mkdtemp(prefix="fastvision-demo-")))
        if rows:
            gr.Examples(rows, inputs=[image, question])
        run.click(compare, inputs=[image, question, k, ratio, method],
                  outputs=[baseline_answer, fastv_answer, summary, heatmap, numbers], api_name="compare",
                  concurrency_limit=concurrency)  # fmt: skip
    demo.queue(default_concurrency_limit=concurrency)
    return demo


def launch_demo(demo: Any, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
                block: bool = True) -> Any:  # fmt: skip
    """Launch with system fonts only (the default theme fetches web fonts, which an offline browser cannot)."""
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["monospace"])
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, theme=theme,
                show_error=True)  # fmt: skip
    return demo


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    from fastvision.cli.demo_cmd import add_arguments

    parser = argparse.ArgumentParser(prog="fastvision demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def launch(args: argparse.Namespace, block: bool = True) -> Any:
    """Load the model, build the demo and launch it; returns the Blocks (for tests, with ``block=False``)."""
    from fastvision.cli.eval_cmd import load_model_for_eval

    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}.")
    model, processor, _ = load_model_for_eval(args.model)
    demo = build_demo(DemoEngine(model, processor, concurrency=args.concurrency), concurrency=args.concurrency)
    return launch_demo(demo, args.host, args.port, args.share, block)


def main(argv: list[str] | None = None) -> int:
    launch(parse_arguments(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
