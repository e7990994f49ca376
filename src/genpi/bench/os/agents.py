"""The OS task's oracle agent: proves the harness right (LLM agents: ``genpi.bench.core.LLMAgent``)."""

from __future__ import annotations

import shlex

from genpi.bench.core import Message
from genpi.bench.os.task import EMPTY_OUTPUT, OUTPUT_PREFIX, Problem


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
