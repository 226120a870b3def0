"""Linear probes on a model's hidden state at the prompt's last position, for easy-VQA's yes/no colour questions:
can each layer's state tell the image's colour, the colour the question names, and whether they match?

``python -m evals.experiments.easyvqa_probes probe [--model PATH] [--limit N]`` prints one row per layer. On a
1500-step bundled model it showed why "is there a red shape?" was answered by its majority class (issue #4): the
image colour was readable after layer 3 (0.98) but the question's colour word never was (at most 0.24, chance
0.125). The shipped 3000-step model reads the question's colour from layer 1 on.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch


@torch.no_grad()
def last_position_states(model: Any, processor: Any, dataset: Any) -> tuple[torch.Tensor, list[int], list[int]]:
    """(questions, layers + 1, hidden) states, and per question the image's and the question's colour index."""
    from fastvision.bundled.train import COLORS, _image_labels
    from fastvision.evals.easyvqa_breakdown import question_group
    from fastvision.evals.vqa import batches, encode_batch

    labels = _image_labels(dataset)
    rows = [i for i, (question, answer, image_id) in enumerate(zip(dataset["question"], dataset["answer"],
            dataset["image_id"], strict=True)) if question_group(question, answer).startswith("color ")
            and image_id in labels]  # fmt: skip
    subset = dataset.select(rows)
    states, image_colors, question_colors = [], [], []
    for batch in batches(subset, 64):
        output = model(**encode_batch(processor, batch["image"], batch["question"]), output_hidden_states=True,
                       use_cache=False)  # fmt: skip
        states.append(torch.stack([hidden[:, -1] for hidden in output.hidden_states], dim=1))
        for question, image_id in zip(batch["question"], batch["image_id"], strict=True):
            image_colors.append(labels[image_id][1])
            question_colors.append(next(COLORS.index(w) for w in question.replace("?", " ").split() if w in COLORS))
    return torch.cat(states), image_colors, question_colors


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression

    from fastvision.cli.eval_cmd import load_model_for_eval
    from fastvision.evals.data import load_easyvqa

    parser = argparse.ArgumentParser(
        prog="python -m evals.experiments.easyvqa_probes probe", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--limit", type=int, default=6000, help="training-split questions to probe on")
    args = parser.parse_args(argv)
    model, processor, _ = load_model_for_eval(args.model)
    states, image_colors, question_colors = last_position_states(model, processor,
                                                                 load_easyvqa("train", limit=args.limit))  # fmt: skip
    matches = [int(a == b) for a, b in zip(image_colors, question_colors, strict=True)]
    split = int(0.7 * len(states))
    print(f"{len(states)} colour yes/no questions; held-out probe accuracy per layer (match base rate "
          f"{1 - sum(matches) / len(matches):.3f})")  # fmt: skip
    for layer in range(states.shape[1]):
        scores = []
        for targets in (image_colors, question_colors, matches):
            features = states[:, layer].numpy()
            probe = LogisticRegression(max_iter=2000).fit(features[:split], targets[:split])
            scores.append(probe.score(features[split:], targets[split:]))
        print(f"layer {layer}: image colour {scores[0]:.3f}  question colour {scores[1]:.3f}  match {scores[2]:.3f}")
    return 0
