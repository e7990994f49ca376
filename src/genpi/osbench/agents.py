"""Agents for the OS task: the oracle (proves the harness right) and LLM agents on any backend."""

from __future__ import annotations

import shlex
from typing import Any

from genpi.osbench.task import EMPTY_OUTPUT, OUTPUT_PREFIX, Message, Problem
from genpi.prompt import Prompt


def _bash(thought: str, code: str) -> str:
    return f"Think: {thought}\n\nAct: bash\n\n```bash\n{code.rstrip(chr(10))}\n```"


def _last_output(conversation: list[Message]) -> str:
    content = conversation[-1]["content"] if conversation else ""
    if content == EMPTY_OUTPUT:
        return ""
    return content.removeprefix(OUTPUT_PREFIX)


class OracleAgent:
    """Answers with what the problem's own solution gives, through the same loop and reader.

    - ``match`` problems: the expected answer (a ``regex`` match cannot be answered: finish);
    - ``check`` problems: run the example solution as a bash action, then answer with its output
      when a check compares against the example (a ``null`` entry), else ``finish``.
    """

    name = "oracle"

    def begin(self, problem: Problem) -> list[Message]:
        return [{"role": "user", "content": problem.description}]

    def act(self, problem: Problem, conversation: list[Message]) -> str:
        replies = sum(1 for m in conversation if m["role"] == "assistant")
        if problem.match is not None:
            if "answer" in problem.match:
                return f"Think: the expected answer.\n\nAct: answer({problem.match['answer']})"
            return "Think: a pattern cannot be answered literally.\n\nAct: finish"
        if problem.example is None:
            return "Think: nothing to run.\n\nAct: finish"
        if replies == 0:
            language, code = problem.example
            if language == "python":
                code = f"python3 -c {shlex.quote(code)}"
            return _bash("run the example solution.", code)
        if any(script is None for script in problem.check or ()):
            answer = _last_output(conversation).strip()
            return f"Think: the example's output is the answer.\n\nAct: answer({answer})"
        return "Think: the example solution is in place.\n\nAct: finish"


class LLMAgent:
    """A model behind any ``genpi.llm`` backend, with the prompt (teacher view) or without it
    (student view: the bare problem, for the base model or an internalized adapter)."""

    def __init__(
        self,
        backend: Any,
        prompt: Prompt,
        *,
        with_prompt: bool = True,
        params: Any = None,
    ) -> None:
        from genpi.llm import SamplingParams

        self.backend = backend
        self.prompt = prompt
        self.with_prompt = with_prompt
        self.params = params or SamplingParams(max_new_tokens=384, temperature=0.0)
        self.name = f"{getattr(backend, 'name', 'llm')}{'' if with_prompt else ' (no prompt)'}"

    def begin(self, problem: Problem) -> list[Message]:
        if self.with_prompt:
            return self.prompt.teacher_messages(problem.description)
        return self.prompt.student_messages(problem.description)

    def act(self, problem: Problem, conversation: list[Message]) -> str:
        # Problems run in parallel call this from several threads; a local backend serialises
        # them itself, an HTTP one serves them concurrently.
        return self.backend.generate([list(conversation)], self.params)[0].text
