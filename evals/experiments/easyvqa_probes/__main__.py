"""``python -m evals.experiments.easyvqa_probes {probe,text-check} [options]``: the two checks that located why the
bundled easy-VQA model answered yes/no questions with their majority answer (issue #4).

``probe`` fits linear probes on each layer's hidden state at the answering position (``probe.py``); ``text-check``
trains the bundled language model on the questions with the image replaced by words (``text_check.py``). Each takes
its own options (``... probe --help``).
"""

from __future__ import annotations

import argparse
import sys

PROG = "python -m evals.experiments.easyvqa_probes"
DESCRIPTION = (
    "The two checks that located why the bundled easy-VQA model answered yes/no questions with their majority answer "
    "(issue #4); each takes its own options."
)
COMMANDS = {
    "probe": "linear probes per layer: image colour, question colour, whether they match",
    "text-check": "the bundled recipe's language model on the questions with the image named in words",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        from evals.experiments.easyvqa_probes.probe import main as probe_main

        return probe_main(argv[1:])
    if argv[:1] == ["text-check"]:
        from evals.experiments.easyvqa_probes.text_check import main as text_check_main

        return text_check_main(argv[1:])
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    parser.parse_args(argv)  # --help, or an error naming the commands
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
