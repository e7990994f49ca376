"""``genpi chat``: talk to a model with the prompt (teacher), without it (student), or with an adapter.

Run as: genpi chat --prompt examples/shell_agent.json --input "How many files are in /etc?"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genpi.errors import GenpiError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="prompt file (text, JSON or YAML)")
    parser.add_argument("--model", default=None, help="model reference (default: smollm2-135m)")
    parser.add_argument("--adapter", default=None, help="adapter directory to apply")
    parser.add_argument(
        "--no-prompt", action="store_true", help="leave the prompt out (the student)"
    )
    parser.add_argument(
        "--compare", action="store_true", help="answer with and without the prompt, side by side"
    )
    parser.add_argument("--input", default=None, help="one input; without it, an interactive loop")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")


def main(args: argparse.Namespace) -> int:
    from genpi.llm import SamplingParams, load_backend
    from genpi.prompt import load_prompt

    prompt = load_prompt(args.prompt)
    if args.compare and (args.no_prompt or args.adapter):
        raise GenpiError(
            "--compare shows the model with and without the prompt; drop --no-prompt/--adapter"
        )
    # The flags before anything loads, so a bad one costs no model load.
    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    except ValueError as exc:
        raise GenpiError(
            f"{exc}: give --max-new-tokens 1 or more and --temperature 0 or more (0 = greedy)"
        ) from None
    if args.adapter:
        from genpi.adapter import INFO_FILE, check_adapter, check_adapter_files

        check_adapter_files(args.adapter)  # a missing or broken file: one line, before the model
        if (Path(args.adapter) / INFO_FILE).exists():
            check_adapter(args.adapter, prompt=prompt)  # an adapter internalizes one prompt
    if args.compare or not (args.no_prompt or args.adapter):
        from genpi.context import check_model_fits

        # Before the weights load: an over-long prompt otherwise generates garbage for minutes.
        check_model_fits(prompt, args.model, reserve=args.max_new_tokens)
    backend = load_backend(args.model, adapter=args.adapter)
    # An adapter replaces the prompt: it is used like the student, without the prompt.
    student = args.no_prompt or args.adapter is not None

    def answer(x: str) -> None:
        if args.compare:
            teacher, plain = backend.generate(
                [prompt.teacher_messages(x), prompt.student_messages(x)], params
            )
            for title, gen in (("with the prompt", teacher), ("without the prompt", plain)):
                action = prompt.read_action(gen.text)
                print(f"=== {title} ({gen.prompt_tokens} prompt tokens, action: {action!r})")
                print(gen.text, end="\n\n")
            return
        messages = prompt.student_messages(x) if student else prompt.teacher_messages(x)
        (gen,) = backend.generate([messages], params)
        print(gen.text)

    if args.input is not None:
        answer(args.input)
        return 0
    interactive = sys.stdin.isatty()
    while True:
        try:
            x = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and not x:
            break
        x = x.strip()
        if x in ("exit", "quit"):
            break
        if x:
            answer(x)
    return 0
