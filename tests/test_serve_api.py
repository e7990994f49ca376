"""``genpi serve`` over real HTTP on 127.0.0.1, with the official openai client, on the tiny model.

Two random adapters (different prompts) sit on one tiny base; every answer is compared with
``LocalBackend`` holding that adapter alone (or none), so a request that saw another adapter's
weights, or the wrong messages, gives another answer.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from genpi.llm import SamplingParams
from genpi.prompt import Prompt, load_prompt

API_KEY = "sk-genpi-test"
FRENCH = Prompt(
    messages=(
        {
            "role": "system",
            "content": "You translate English into French. Answer with the translation only.",
        },
        {"role": "user", "content": "English: good morning\nFrench:"},
        {"role": "assistant", "content": "bonjour"},
    ),
    input_template="English: {input}\nFrench:",
    name="french",
)
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tiny_adapter_dir, tmp_path_factory):
    from genpi.adapter import make_random_adapter

    french = make_random_adapter(str(tiny_model_dir), FRENCH, tmp_path_factory.mktemp("fr"), seed=2)
    return {"shell": tiny_adapter_dir, "french": french}


@pytest.fixture(scope="module")
def shell_prompt(example_prompt_path):
    return load_prompt(example_prompt_path)


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapters):
    from genpi.serve.engine import load_engine
    from genpi.serve.server import ServeConfig, create_app
    from genpi.serve.testing import ServerThread

    loaded = load_engine(
        str(tiny_model_dir), adapters, dtype="fp32", device="cpu", max_batch_size=8
    )
    app = create_app(
        loaded, ServeConfig(served_name="tiny", api_key=API_KEY, max_body_bytes=MAX_BODY)
    )
    with ServerThread(app) as running:
        running.engine = loaded.engine
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, adapters, tiny_backend):
    """Greedy answers of LocalBackend with one adapter alone (None: the base model), memoized."""
    from genpi.llm.local import LocalBackend

    backends = {None: tiny_backend}
    for name, directory in adapters.items():
        backends[name] = LocalBackend.from_ref(str(tiny_model_dir), adapter=directory, dtype="fp32")
    cache: dict[tuple, str] = {}

    def answer(adapter: str | None, messages: list[dict], max_tokens: int) -> str:
        key = (adapter, json.dumps(messages), max_tokens)
        if key not in cache:
            (gen,) = backends[adapter].generate(
                [messages], SamplingParams(max_new_tokens=max_tokens)
            )
            cache[key] = gen.text
        return cache[key]

    answer.backends = backends
    return answer


def ask(client, messages, model="tiny", max_tokens=8, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, **kw
    )
    return raw.parse(), raw.headers


def test_models_lists_the_base_and_each_adapter(client, shell_prompt):
    models = {m.id: m for m in client.models.list().data}
    assert list(models) == ["tiny", "shell", "french"]
    assert models["tiny"].parent is None
    assert models["shell"].parent == "tiny"
    assert models["shell"].prompt_fingerprint == shell_prompt.fingerprint
    assert models["french"].prompt_fingerprint == FRENCH.fingerprint


def test_prompted_request_is_answered_by_its_adapter_without_the_prompt(
    client, shell_prompt, reference
):
    teacher = shell_prompt.teacher_messages("how many files are in /etc?")
    student = shell_prompt.student_messages("how many files are in /etc?")
    response, headers = ask(client, teacher)
    assert headers["x-genpi-adapter"] == "shell" and headers["x-genpi-route"] == "prompt"
    assert response.choices[0].message.content.strip() == reference("shell", student, 8)
    encode = reference.backends[None].encode
    assert response.usage.prompt_tokens == len(encode(student))
    saved = len(encode(teacher)) - len(encode(student))
    assert saved > 300  # the example prompt is a long one
    assert response.usage.prompt_tokens_saved == saved
    assert headers["x-genpi-prompt-tokens-saved"] == str(saved)
    # The adapters really differ: the base model and the other adapter answer otherwise.
    assert reference("shell", student, 8) != reference(None, student, 8)
    assert reference("shell", student, 8) != reference("french", student, 8)


def test_adapter_named_as_the_model_answers_the_messages_as_sent(client, reference):
    messages = [{"role": "user", "content": "Say something."}]
    response, headers = ask(client, messages, model="french")
    assert headers["x-genpi-adapter"] == "french" and headers["x-genpi-route"] == "model"
    assert response.usage.prompt_tokens_saved == 0
    assert response.choices[0].message.content.strip() == reference("french", messages, 8)


def test_any_other_request_goes_to_the_base_model_with_its_full_messages(
    client, shell_prompt, reference
):
    messages = shell_prompt.teacher_messages("count files")
    messages[0] = {**messages[0], "content": messages[0]["content"] + " Be brief."}
    response, headers = ask(client, messages)
    assert headers["x-genpi-adapter"] == "" and headers["x-genpi-route"] == "base"
    assert response.usage.prompt_tokens == len(reference.backends[None].encode(messages))
    assert response.usage.prompt_tokens_saved == 0
    assert response.choices[0].message.content.strip() == reference(None, messages, 8)


def test_streaming_sends_the_same_answer_in_deltas(client):
    messages = FRENCH.teacher_messages("the house is red")
    whole, _ = ask(client, messages, max_tokens=12)
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len([d for d in deltas if d]) > 1  # token by token, not in one piece
    assert "".join(deltas) == whole.choices[0].message.content
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens_saved == whole.usage.prompt_tokens_saved > 0


def test_stop_string_ends_the_answer_before_it(client, shell_prompt):
    messages = shell_prompt.student_messages("count the files in /etc")
    full, _ = ask(client, messages, model="shell", max_tokens=16)
    text = full.choices[0].message.content
    assert len(set(text)) > 3, text  # enough text to cut
    stop = text[4:7]
    response, _ = ask(client, messages, model="shell", max_tokens=16, stop=[stop, "never seen"])
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.content == text[: text.find(stop)]
    streamed = client.chat.completions.create(
        model="shell", messages=messages, max_tokens=16, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == text[: text.find(stop)]


def test_sampling_with_a_seed_repeats(client):
    messages = [{"role": "user", "content": "Pick a word."}]
    answers = {
        client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=1.0, seed=seed
        )
        .choices[0]
        .message.content
        for seed in (7, 7, 8)
    }
    assert len(answers) == 2  # seed 7 twice gives one answer, seed 8 another


def test_api_key_is_required(server):
    for key in (None, "wrong"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.get(f"{server.url}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def _post(server, content, headers=None):
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        **(headers or {}),
    }
    return httpx.post(
        f"{server.url}/v1/chat/completions", content=content, headers=headers, timeout=30
    )


def _body(**overrides):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(overrides)
    return json.dumps(body).encode()


def _chunked(data: bytes):
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


BAD_REQUESTS = {
    "malformed JSON": (lambda: b'{"model": "tiny", "messages": [', 400, "invalid_json", None),
    "not an object": (lambda: b"[1, 2]", 400, "invalid_json", None),
    "unknown model": (lambda: _body(model="gpt-4"), 404, "model_not_found", "model"),
    "missing model": (lambda: _body(model=None), 400, None, "model"),
    "empty messages": (lambda: _body(messages=[]), 400, None, "messages"),
    "unknown role": (
        lambda: _body(messages=[{"role": "wizard", "content": "x"}]),
        400,
        None,
        "messages.0.role",
    ),
    "negative max_tokens": (lambda: _body(max_tokens=-3), 400, None, "max_tokens"),
    "max_tokens over the context": (
        lambda: _body(max_tokens=10**6),
        400,
        "context_length_exceeded",
        "max_tokens",
    ),
    "n above 1": (lambda: _body(n=3), 400, None, "n"),
    "temperature out of range": (lambda: _body(temperature=7), 400, None, "temperature"),
    "oversized body": (
        lambda: _body(messages=[{"role": "user", "content": "x" * MAX_BODY}]),
        413,
        "request_too_large",
        None,
    ),
    "oversized chunked body": (
        lambda: _chunked(_body(messages=[{"role": "user", "content": "x" * MAX_BODY}])),
        413,
        "request_too_large",
        None,
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_an_openai_error_and_the_server_keeps_serving(server, client, case):
    make, status, code, param = BAD_REQUESTS[case]
    r = _post(server, make())
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code and error["param"] == param
    response, _ = ask(client, [{"role": "user", "content": "still there?"}], max_tokens=2)
    assert response.choices[0].message.content


def test_unknown_path_gets_an_openai_error(server):
    r = httpx.get(f"{server.url}/v1/nothing", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_frees_its_slot(server, client, stream):
    before = httpx.get(f"{server.url}/health").json()["cancelled"]
    body = {
        "model": "shell",
        "messages": [{"role": "user", "content": "go on forever"}],
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": stream,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{server.url}/v1/chat/completions"
    if stream:
        with httpx.stream("POST", url, json=body, headers=headers) as r:
            lines = r.iter_lines()
            assert [next(lines) for _ in range(6)]  # a few tokens arrive, then the client hangs up
    else:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting
            httpx.post(url, json=body, headers=headers, timeout=1.0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = httpx.get(f"{server.url}/health").json()
        if health["cancelled"] > before and health["running"] == 0:
            break
        time.sleep(0.05)
    # Cancelled, not run to its 3000 tokens: its rows left the batch.
    assert health["cancelled"] == before + 1 and health["running"] == 0
    response, _ = ask(client, [{"role": "user", "content": "next"}], max_tokens=2)
    assert response.choices[0].message.content


def test_load_32_clients_x_4_requests_each_answered_by_the_right_weights(
    server, client, shell_prompt, reference
):
    """Interleaved concurrent requests for two adapters and the base: no errors, no mixing."""
    inputs = [f"task number {i}: list the files in /tmp/{i}" for i in range(4)]
    kinds = {  # kind -> (what the client sends, model, adapter that must answer, what it sees)
        "shell-by-prompt": lambda x: (
            shell_prompt.teacher_messages(x),
            "tiny",
            "shell",
            shell_prompt.student_messages(x),
        ),
        "french-by-prompt": lambda x: (
            FRENCH.teacher_messages(x),
            "tiny",
            "french",
            FRENCH.student_messages(x),
        ),
        "french-by-name": lambda x: (
            [{"role": "user", "content": x}],
            "french",
            "french",
            [{"role": "user", "content": x}],
        ),
        "base": lambda x: (
            [{"role": "user", "content": x}],
            "tiny",
            None,
            [{"role": "user", "content": x}],
        ),
    }
    names = list(kinds)
    jobs = [[(names[(c + k) % 4], inputs[(3 * c + k) % 4]) for k in range(4)] for c in range(32)]
    expected = {
        (kind, x): reference(kinds[kind](x)[2], kinds[kind](x)[3], 6)
        for kind in names
        for x in inputs
    }
    # The check can fail: on most requests, the other weights would answer otherwise.
    telling = 0
    for kind in names:
        for x in inputs:
            _, _, adapter, seen = kinds[kind](x)
            others = {reference(w, seen, 6) for w in (None, "shell", "french") if w != adapter}
            telling += expected[(kind, x)] not in others
    assert telling > len(expected) // 2, telling

    def run_client(job):
        out = []
        for kind, x in job:
            messages, model, _, _ = kinds[kind](x)
            t0 = time.perf_counter()
            try:
                response, headers = ask(client, messages, model=model, max_tokens=6)
                out.append(
                    (
                        kind,
                        x,
                        response.choices[0].message.content.strip(),
                        headers["x-genpi-adapter"],
                        time.perf_counter() - t0,
                    )
                )
            except Exception as exc:  # counted, not raised: the test reports every error
                out.append((kind, x, exc, None, time.perf_counter() - t0))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        results = [r for rs in pool.map(run_client, jobs) for r in rs]
    wall = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r[2], Exception)]
    assert not errors, errors[:3]
    wrong = [
        (k, x)
        for k, x, text, adapter, _ in results
        if text != expected[(k, x)] or adapter != (kinds[k](x)[2] or "")
    ]
    assert not wrong, wrong[:5]
    latencies = sorted(r[4] for r in results)
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\nload: {len(results)} requests from 32 clients in {wall:.2f}s, p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, batches {server.engine.batches_run}, joined {server.engine.rows_joined}"
    )
    assert len(results) == 128
