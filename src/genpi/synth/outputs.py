"""Stage 3: the AS-IS and TO-BE outputs.

``student_output`` (y^S) is the target model's first answer without the prompt (greedy);
``teacher_output`` (y^T) is the teacher's first turn of the role-played conversation (stage 2).

Run as: genpi synth outputs --prompt examples/shell_agent.json --out runs/shell
"""

from __future__ import annotations

from typing import Any

from genpi.llm import Backend, SamplingParams
from genpi.synth.common import GuardedBackend, write_batches
from genpi.synth.config import SynthConfig
from genpi.synth.rundir import RunDir, RunDirError


def run_outputs(run: RunDir, model: Backend, config: SynthConfig) -> dict[str, Any]:
    """Write both outputs for every conversation that has none yet."""
    conversations = run.read("conversations")
    if not conversations:
        raise RunDirError(
            f"{str(run.path)!r} has no conversations yet: run `genpi synth conversations` first"
        )
    done = run.done_ids("outputs")
    pending = [c for c in conversations if c["id"] not in done]
    params = SamplingParams(max_new_tokens=config.output_max_new_tokens, temperature=0.0)
    settings = {"model": getattr(model, "name", "?"), "student_params": params.to_dict()}
    guard = GuardedBackend(
        model, "outputs", max_consecutive_failures=config.max_consecutive_failures
    )
    new = {"written": 0, "empty_student": 0, "empty_teacher": 0, "dropped_by_backend_errors": 0}

    def records_of(start: int, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        gens = guard.generate([run.prompt.student_messages(c["input"]) for c in batch], params)
        if gens is None:
            return None
        records = []
        for conv, gen in zip(batch, gens, strict=True):
            turns = conv.get("turns") or []
            teacher = turns[0]["content"] if turns and turns[0]["role"] == "assistant" else ""
            new["empty_student"] += not gen.text.strip()
            new["empty_teacher"] += not teacher.strip()
            records.append(
                run.record(
                    conv["id"],
                    settings,
                    input=conv["input"],
                    student_output=gen.text,
                    teacher_output=teacher,
                )
            )
        return records

    return write_batches(run, "outputs", pending, records_of, guard, new, config)
