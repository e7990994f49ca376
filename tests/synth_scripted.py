"""A scripted backend for the synthesis tests: answers by rule, so model quality is irrelevant.

Also runnable as a subprocess (the SIGKILL test): ``python synth_scripted.py RUN_DIR PROMPT N SLOW``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from genpi.llm import BackendError, Generation, SamplingParams

ENV_MARK = "You are not the assistant in this conversation"


class ScriptedBackend:
    """Inputs: numbered lists of distinct problems. Agent: ``Action: run[..]`` then ``done[..]``.

    Environment: ``Output: ...`` until the agent's reply holds ``done[``, then the end token
    (unless ``never_end``). ``fail_calls`` makes those call numbers raise BackendError.
    """

    name = "scripted"

    def __init__(
        self,
        *,
        agent_turns: int = 2,
        never_end: bool = False,
        list_text: str | None = None,
        fail_calls: set[int] | None = None,
        delay: float = 0.0,
        junk: bool = False,
        reject_word: str | None = None,
    ) -> None:
        self.agent_turns = agent_turns
        self.never_end = never_end
        self.list_text = list_text
        self.fail_calls = fail_calls or set()
        self.delay = delay
        self.junk = junk  # lists also hold fragments, a demonstration's copy and a repeat
        self.reject_word = reject_word  # the agent answers a task holding it without an action
        self.calls: list[int] = []  # batch size of every call
        self.list_counter = 0

    def generate(
        self, conversations: Sequence[list[dict]], params: SamplingParams
    ) -> list[Generation]:
        self.calls.append(len(conversations))
        if len(self.calls) in self.fail_calls:
            raise BackendError("scripted failure: endpoint down")
        if self.delay:
            time.sleep(self.delay)
        return [Generation(self._answer(c), 10, 5, "stop") for c in conversations]

    def _answer(self, conv: list[dict]) -> str:
        first = conv[0]["content"]
        last = conv[-1]["content"]
        last_user = next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")
        if "new user inputs for this task" in last_user:
            if self.list_text is not None:
                return self.list_text
            items = []
            for _ in range(4):
                self.list_counter += 1
                items.append(
                    f"count the files named report{self.list_counter}.txt in folder{self.list_counter}"
                )
            if self.junk:
                items += [
                    "2",
                    "SELECTION:",
                    "<instruction_out_of_original_answer_with_deny_reserved_return_params>",
                    "how many lines does /etc/passwd have?",
                    items[0],
                    f"check the {self.reject_word or 'weather'} report{self.list_counter} today",
                ]
            return (
                "Sure, here they are:\n"
                + "\n".join(f"{i + 1}. {t}" for i, t in enumerate(items))
                + "\n\nEnjoy!"
            )
        if "careful commentator" in last:
            return "The prompt asks for a Thought and an Action line, so the answer changes."
        if conv[0]["role"] == "system" and first.startswith(ENV_MARK):
            if "done[" in last and not self.never_end:
                return "[END_CONVERSATION]"
            return "Output:\n42"
        if self.reject_word and self.reject_word in last and last.startswith("Task: "):
            return "I am not sure what to do."
        if conv[-1]["role"] == "user" and len(conv) >= 1:
            agent_so_far = sum(m["role"] == "assistant" for m in conv) - self._demo_assistants(conv)
            if agent_so_far + 1 >= self.agent_turns:
                return "Thought: I can answer.\nAction: done[42]"
            return "Thought: I will look.\nAction: run[ls]"
        return ""

    @staticmethod
    def _demo_assistants(conv: list[dict]) -> int:
        # The teacher's conversation: the prompt's demonstrations come before the task's user turn.
        for i in range(len(conv) - 1, -1, -1):
            if conv[i]["role"] == "user" and conv[i]["content"].startswith("Task: "):
                return sum(m["role"] == "assistant" for m in conv[: i + 1])
        return 0


def pause_after_log_write(run_dir: str, nth: int) -> None:
    """Stop for good after the ``nth`` line of stage 1's log, before that batch's records are
    written (the SIGKILL test kills the process there); ``RUN_DIR/paused`` says it got there."""
    from pathlib import Path

    from genpi.synth import rundir

    original = rundir.StageWriter.write
    seen = [0]

    def write(self, records):
        written = original(self, records)
        if self.path.name == rundir.INPUTS_LOG:
            seen[0] += 1
            if seen[0] == nth:
                Path(run_dir, "paused").write_text("")
                time.sleep(600)
        return written

    rundir.StageWriter.write = write


if __name__ == "__main__":
    from genpi.prompt import load_prompt
    from genpi.synth import SynthConfig, synthesize

    run_dir, prompt_path, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    # A 5th argument: lists with junk, a teacher that turns some inputs down, and a pause after
    # that many log lines (0: none).
    pause = int(sys.argv[5]) if len(sys.argv) > 5 else None
    if pause is None:
        backend = ScriptedBackend(delay=delay)
    else:
        backend = ScriptedBackend(delay=delay, junk=True, reject_word="weather")
        if pause:
            pause_after_log_write(run_dir, pause)
    config = SynthConfig(n=n, num_gen_once=4, batch_size=2, progress=False, max_turns=3)
    synthesize(
        load_prompt(prompt_path),
        run_dir,
        model_backend=backend,
        generator_backend=backend,
        config=config,
    )
