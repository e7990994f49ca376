"""``genpi serve`` on the embedded SmolLM2-135M with a random adapter: routing and streaming."""

from __future__ import annotations

import openai
import pytest

from genpi.llm import SamplingParams
from genpi.prompt import load_prompt


@pytest.mark.integration
def test_embedded_model_routes_prompted_requests_to_the_adapter(
    tmp_path, example_prompt_path, embedded_backend
):
    from genpi.adapter import make_random_adapter
    from genpi.llm.local import LocalBackend
    from genpi.serve.engine import load_engine
    from genpi.serve.server import ServeConfig, create_app
    from genpi.serve.testing import ServerThread

    prompt = load_prompt(example_prompt_path)
    adapter = make_random_adapter("smollm2-135m", prompt, tmp_path / "shell", seed=3)
    alone = LocalBackend.from_ref("smollm2-135m", adapter=adapter)
    loaded = load_engine("smollm2-135m", {"shell": adapter})
    params = SamplingParams(max_new_tokens=8)
    x = "how many files are in /etc?"
    with ServerThread(create_app(loaded, ServeConfig(served_name="smollm2"))) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)

        routed = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=prompt.teacher_messages(x), max_tokens=8, temperature=0
        )
        (want,) = alone.generate([prompt.student_messages(x)], params)
        assert routed.headers["x-genpi-adapter"] == "shell"
        assert routed.parse().choices[0].message.content.strip() == want.text
        assert routed.parse().usage.prompt_tokens == want.prompt_tokens
        assert routed.parse().usage.prompt_tokens_saved > 300

        plain = [{"role": "user", "content": x}]
        passed = client.chat.completions.create(
            model="smollm2", messages=plain, max_tokens=8, temperature=0
        )
        (base,) = embedded_backend.generate([plain], params)
        assert passed.choices[0].message.content.strip() == base.text

        stream = client.chat.completions.create(
            model="shell",
            messages=prompt.student_messages(x),
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream).strip() == want.text
