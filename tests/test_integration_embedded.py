"""The embedded SmolLM2-135M with AgentBench's OS prompt: the gap an adapter must close."""

import json

import pytest

from genpi.llm import SamplingParams
from genpi.prompt import load_prompt

pytestmark = pytest.mark.integration


def test_teacher_answers_in_the_action_format_and_the_student_does_not(
    embedded_backend, os_prompt_path, agentbench_dir
):
    prompt = load_prompt(os_prompt_path)
    problems = json.loads((agentbench_dir / "os_interaction" / "data" / "dev.json").read_text())
    x = problems[0]["description"]
    params = SamplingParams(max_new_tokens=96)
    teacher, student = embedded_backend.generate(
        [prompt.teacher_messages(x), prompt.student_messages(x)], params
    )
    assert prompt.read_action(teacher.text) is not None, teacher.text
    assert student.text != teacher.text
    assert teacher.prompt_tokens > student.prompt_tokens + 400  # the prompt's ~530 tokens
