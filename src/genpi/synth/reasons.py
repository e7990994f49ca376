"""Stage 4: reasons, the generator's account of why the prompt changes the output.

For each example the generator reads the prompt, the input, the output without the prompt
(AS-IS, y^S) and the output with it (TO-BE, y^T), and explains in about five sentences what in
the prompt makes the answer change (nucleus sampling, top-p 0.9, T 0.7).

Run as: genpi synth reasons --prompt examples/shell_agent.json --out runs/shell
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genpi.llm import Backend, Message, SamplingParams
from genpi.prompt import Prompt
from genpi.synth.common import GuardedBackend, write_batches
from genpi.synth.config import SynthConfig
from genpi.synth.rundir import RunDir, RunDirError

COMMENTATOR_INSTRUCTION = """\
You are a careful commentator. An AI model answered the same user input twice: once without any \
instructions (AS-IS) and once after reading the prompt below (TO-BE). Explain why the answer \
changes from AS-IS to TO-BE because of the prompt.

<prompt>
{prompt}
</prompt>

<input>
{input}
</input>

<as-is>
{as_is}
</as-is>

<to-be>
{to_be}
</to-be>

In about five sentences, name the parts of the prompt (its rules, its output format, its \
demonstrations, its role) that the TO-BE answer follows and the AS-IS answer does not, and say \
how each one shapes the TO-BE answer. Refer to the prompt's content, not to its wording alone. \
Write plain prose only, with no list and no preamble."""


def reason_request(prompt: Prompt, x: str, as_is: str, to_be: str) -> list[Message]:
    text = COMMENTATOR_INSTRUCTION.format(
        prompt=prompt.text, input=x, as_is=as_is or "(empty)", to_be=to_be or "(empty)"
    )
    return [{"role": "user", "content": text}]


def run_reasons(run: RunDir, generator: Backend, config: SynthConfig) -> dict[str, Any]:
    """Write a reason for every example with outputs and no reason yet."""
    outputs = run.read("outputs")
    if not outputs:
        raise RunDirError(f"{str(run.path)!r} has no outputs yet: run `genpi synth outputs` first")
    done = run.done_ids("reasons")
    pending = [o for o in outputs if o["id"] not in done]
    base = SamplingParams(
        max_new_tokens=config.reason_max_new_tokens,
        temperature=config.reason_temperature,
        top_p=config.reason_top_p,
    )
    guard = GuardedBackend(
        generator, "reasons", max_consecutive_failures=config.max_consecutive_failures
    )
    new = {"written": 0, "empty": 0, "dropped_by_backend_errors": 0}

    def records_of(start: int, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        requests = [
            reason_request(
                run.prompt,
                o["input"],
                o.get("student_output") or "",
                o.get("teacher_output") or "",
            )
            for o in batch
        ]
        params = dataclasses.replace(base, seed=config.seed + len(done) + start)
        settings = {"generator": getattr(generator, "name", "?"), "params": params.to_dict()}
        gens = guard.generate(requests, params)
        if gens is None:
            return None
        for gen in gens:
            new["empty"] += not gen.text.strip()
        return [
            run.record(out["id"], settings, reason=gen.text.strip())
            for out, gen in zip(batch, gens, strict=True)
        ]

    return write_batches(run, "reasons", pending, records_of, guard, new, config)
