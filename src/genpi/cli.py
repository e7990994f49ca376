"""The ``genpi`` command: a table of verbs, each a module with ``add_arguments`` and ``main``.

Run as: genpi --help
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from genpi import __version__
from genpi.errors import GenpiError

# verb -> (module, one-line help). A verb whose module is not present is not offered.
VERBS: dict[str, tuple[str, str]] = {
    "internalize": ("genpi.internalize", "synthesize, train, evaluate and compare, end to end"),
    "grid": ("genpi.grid", "the paper's tables: every method on one synthesis, one table"),
    "chat": ("genpi.chat", "talk to a model with the prompt, without it, or with an adapter"),
    "synth": ("genpi.synth.cli", "synthesize training data from the prompt alone"),
    "train": ("genpi.train.cli", "train an adapter on a run directory's data"),
    "merge": ("genpi.train.merge", "merge an adapter into its base model"),
    "eval": ("genpi.evaluate.cli", "evaluate adapters against the prompted teacher"),
    "compare": ("genpi.evaluate.compare", "one table of every method trained in a run"),
    "eval-agent": ("genpi.bench.cli", "an agent's success rate on a benchmark (--bench NAME)"),
    "eval-os": ("genpi.bench.os.cli", "alias of `eval-agent --bench os` (AgentBench OS tasks)"),
    "sandbox": ("genpi.bench.os.sandbox_cli", "build or check the OS-interaction sandbox"),
    "profile": ("genpi.profile", "FLOPs, latency and KV-cache bytes saved per turn"),
    "serve": ("genpi.serve.cli", "OpenAI-compatible server that applies internalized prompts"),
    "export": ("genpi.serve.export", "export adapters for vLLM, or AgentBench agents for serve"),
}


def _present(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # its parent package is absent
        return False


def available_verbs() -> dict[str, tuple[str, str]]:
    return {verb: spec for verb, spec in VERBS.items() if _present(spec[0])}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genpi",
        description="Internalize a long, fixed prompt into a small LoRA adapter (GenPI).",
    )
    parser.add_argument("--version", action="version", version=f"genpi {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module_name, help_text) in available_verbs().items():
        module = importlib.import_module(module_name)
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        return int(args._main(args) or 0)
    except GenpiError as exc:
        print(f"genpi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "genpi: interrupted; finished work is kept, re-run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
