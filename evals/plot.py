"""The Pareto plot of a sweep: accuracy against prefill FLOPs relative to the unpatched model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastvision.evals.results import EvalResults


def pareto_plot(results: EvalResults, path: str | Path) -> Path:
    """One line per K for FastV, one per other method (DART, random, stride, pool: each its own style), the unpatched
    model as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    lines: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in results.settings:
        if row.method == "unpatched":
            continue
        lines.setdefault((row.method, row.config["k"]), []).append((row.relative_flops, row.accuracy))
    for (method, k), points in sorted(lines.items()):
        points.sort()
        style, label = BASELINE_STYLES.get(method, ({"marker": "o"}, "FastV"))
        label = f"{label} K={k}"
        axes.plot([x for x, _ in points], [y for _, y in points], label=label, **style)
    baseline = results.baseline()
    axes.plot([1.0], [baseline.accuracy], marker="*", markersize=14, color="black", linestyle="none",
              label="unpatched")  # fmt: skip
    axes.set_xlabel("prefill FLOPs relative to the unpatched model")
    axes.set_ylabel("exact-match accuracy")
    axes.set_title(f"{Path(results.model).name} on {results.dataset.get('name')} ({baseline.questions} questions)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _widen_to(axes, MIN_ACCURACY_SPAN)
    return save_figure(figure, path)


BASELINE_STYLES = {
    "random": ({"linestyle": "--", "marker": "x"}, "random pruning,"),
    "stride": ({"linestyle": ":", "marker": "s"}, "keep-by-position (stride),"),
    "pool": ({"linestyle": "-.", "marker": "D"}, "spatial pooling,"),
    "dart": ({"linestyle": (0, (5, 1)), "marker": "^"}, "DART,"),
    "divprune": ({"linestyle": (0, (3, 1, 1, 1)), "marker": "v"}, "DivPrune,"),
    "visionzip": ({"linestyle": (0, (1, 1)), "marker": "P"}, "VisionZip,"),
}
MIN_ACCURACY_SPAN = 0.05  # so that a few questions' difference does not fill the plot's height


def _widen_to(axes: Any, span: float) -> None:
    """Widen the y range to at least ``span``, centred on the data, so small differences look small."""
    low, high = axes.get_ylim()
    if high - low < span:
        middle = (low + high) / 2
        axes.set_ylim(middle - span / 2, middle + span / 2)


def save_figure(figure: Any, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def type_plot(results: EvalResults, path: str | Path) -> Path:
    """One panel per question type: accuracy against relative FLOPs for FastV and each baseline at the baselines' K.

    Shows which kinds of question each method loses first as it keeps fewer tokens.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({kind for row in results.settings for kind in (row.by_type or {})})
    if not kinds:
        raise ValueError("These results have no per-question-type accuracy (the dataset has no question types).")
    baseline_ks = {row.config["k"] for row in results.settings if row.method not in ("unpatched", "fastv")}
    k = min(baseline_ks) if baseline_ks else min(row.config["k"] for row in results.settings if row.config)
    columns = min(len(kinds), 4)
    rows_needed = -(-len(kinds) // columns)
    figure, axes = plt.subplots(rows_needed, columns, figsize=(3.2 * columns, 3.0 * rows_needed), dpi=110,
                                squeeze=False, sharey=True)  # fmt: skip
    base = results.baseline()
    for panel, kind in zip(axes.flat, kinds, strict=False):
        lines: dict[str, list[tuple[float, float]]] = {}
        for row in results.settings:
            if row.method != "unpatched" and row.config["k"] == k and kind in row.type_accuracy():
                lines.setdefault(row.method, []).append((row.relative_flops, row.type_accuracy()[kind]))
        for method, points in sorted(lines.items(), key=lambda item: item[0] != "fastv"):
            points.sort()
            style, label = BASELINE_STYLES.get(method, ({"marker": "o"}, "FastV"))
            panel.plot([x for x, _ in points], [y for _, y in points], label=label.rstrip(","), **style)
        if kind in base.type_accuracy():
            panel.plot([1.0], [base.type_accuracy()[kind]], marker="*", markersize=12, color="black",
                       linestyle="none", label="unpatched")  # fmt: skip
        panel.set_title(f"{kind} ({(base.by_type or {}).get(kind, [0, 0])[1]} q)", fontsize=9)
        panel.set_xlabel("relative prefill FLOPs", fontsize=8)
        panel.grid(alpha=0.3)
    for panel in list(axes.flat)[len(kinds) :]:
        panel.axis("off")
    axes[0][0].set_ylabel("exact-match accuracy")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"{Path(results.model).name} on {results.dataset.get('name')}: accuracy by question type, K={k}",
                    fontsize=10)  # fmt: skip
    return save_figure(figure, path)
