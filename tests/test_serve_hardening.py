"""``genpi serve`` against hostile or odd clients, on the tiny model over 127.0.0.1.

A request that breaks fails alone (not its batch); text that is not Unicode and JSON nested too
deep get an OpenAI 400; tokenizing happens off the event loop; OpenAI parameters the server does
not implement are refused by name; a connection that stalls in its headers is closed, and one
beyond the cap is refused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from genpi.serve.engine import Delta, Failed, Finished, GenRequest
from genpi.serve.testing import free_port, serve_command, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tiny_adapter_dir):
    from genpi.serve.engine import load_engine
    from genpi.serve.server import ServeConfig, create_app
    from genpi.serve.testing import ServerThread

    loaded = load_engine(
        str(tiny_model_dir), {"shell": tiny_adapter_dir}, dtype="fp32", device="cpu"
    )
    app = create_app(loaded, ServeConfig(served_name="tiny", max_body_bytes=1 << 20))
    with ServerThread(app) as running:
        running.engine = loaded.engine
        yield running


def post(server, body: dict | bytes, timeout: float = 60) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )


def chat(text: str, max_tokens: int = 8, **extra) -> dict:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        **extra,
    }


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def assert_still_serving(server) -> None:
    assert answer(post(server, chat("still there?", max_tokens=2)))


# -- 1. one request fails alone ----------------------------------------------------------------


def test_extreme_sampling_values_do_not_fail_the_requests_decoding_beside_them(server):
    """Issue: temperature 1e-300, top_p 1e-300 or seed 2**64 made every request of the batch 500."""
    texts = [f"count the files in /tmp/{i}" for i in range(3)]
    greedy = {text: answer(post(server, chat(text, max_tokens=24))) for text in texts}
    odd = "answer with one word"
    greedy[odd] = answer(post(server, chat(odd, max_tokens=6)))
    extremes = {
        # below 1e-5 a temperature decodes greedily (it overflowed float32 into NaN)
        "tiny temperature": chat(odd, max_tokens=6, temperature=1e-300, seed=1),
        # the most likely token always stays in the nucleus (float32 rounded top_p to 0: none)
        "tiny top_p": chat(odd, max_tokens=6, temperature=1.0, top_p=1e-300, seed=1),
        "seed over 64 bits": chat(odd, max_tokens=6, temperature=1.0, seed=2**64),
    }
    with ThreadPoolExecutor(len(texts) + len(extremes)) as pool:
        decoding = {t: pool.submit(post, server, chat(t, max_tokens=24)) for t in texts}
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/health").json()["running"] == 0:
            assert time.monotonic() < deadline, "the first requests never started decoding"
            time.sleep(0.01)
        late = {name: pool.submit(post, server, body) for name, body in extremes.items()}
        done = {t: f.result() for t, f in decoding.items()}
        odd_done = {name: f.result() for name, f in late.items()}
    for text, response in done.items():
        assert answer(response) == greedy[text], text
    assert answer(odd_done["tiny temperature"]) == greedy[odd]
    assert answer(odd_done["tiny top_p"]) == greedy[odd]
    error = assert_openai_error(odd_done["seed over 64 bits"], 400)
    assert error["param"] == "seed" and "2**64" in error["message"]
    assert_still_serving(server)


class Collector:
    def __init__(self, on_first_delta=None):
        self.done = threading.Event()
        self.result: Finished | Failed | None = None
        self.on_first_delta = on_first_delta

    def __call__(self, event):
        if isinstance(event, Delta) and self.on_first_delta is not None:
            hook, self.on_first_delta = self.on_first_delta, None
            hook()  # on the worker thread, mid-batch
        elif isinstance(event, Finished | Failed):
            self.result = event
            self.done.set()


def gen_request(engine, text: str, collector: Collector, max_tokens: int, **kw) -> GenRequest:
    ids = engine.encode([{"role": "user", "content": text}])
    return GenRequest(
        adapter=None,
        input_ids=ids,
        on_event=collector,
        max_tokens=max_tokens,
        ignore_eos=True,
        **kw,
    )


def test_a_row_that_fails_leaves_the_batch_and_the_other_rows_finish_exactly(server, monkeypatch):
    """Inside the engine, past the door's checks: a row that cannot start (a seed torch refuses)
    and a row whose token choice raises mid-decoding fail alone, while the rows they joined
    finish with the answers they give alone."""
    from genpi.serve.engine import _Row

    engine = server.engine
    alone = {}
    for text, n in (("the first question", 16), ("a later question", 6)):
        c = Collector()
        engine.submit(gen_request(engine, text, c, n))
        assert c.done.wait(60) and isinstance(c.result, Finished)
        alone[text] = c.result.text

    real_choose = _Row.choose

    def choose(row, logits):
        if row.request.max_tokens == 13 and len(row.tokens) == 2:
            raise RuntimeError("this row's sampling broke")
        return real_choose(row, logits)

    monkeypatch.setattr(_Row, "choose", choose)
    bad_seed, poisoned, later = Collector(), Collector(), Collector()

    def join_mid_batch():
        engine.submit(gen_request(engine, "x", bad_seed, 4, temperature=1.0, seed=2**64))
        engine.submit(gen_request(engine, "a poisoned question", poisoned, 13))
        engine.submit(gen_request(engine, "a later question", later, 6))

    first = Collector(on_first_delta=join_mid_batch)
    joined_before = engine.rows_joined
    engine.submit(gen_request(engine, "the first question", first, 16))
    for c in (first, bad_seed, poisoned, later):
        assert c.done.wait(60)
    assert engine.rows_joined == joined_before + 3  # they joined the batch already decoding
    assert isinstance(bad_seed.result, Failed)
    assert isinstance(poisoned.result, Failed)
    assert "this row's sampling broke" in poisoned.result.message
    assert isinstance(first.result, Finished) and first.result.text == alone["the first question"]
    assert isinstance(later.result, Finished) and later.result.text == alone["a later question"]


# -- 2. text that is not Unicode, JSON too deep: a 400, OpenAI-shaped -------------------------

_DEEP = b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
_DEEP_OBJECT = b'{"model": "tiny", "x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"

NOT_TEXT = {
    "escaped lone surrogate": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
        "messages.0.content",
    ),
    "raw surrogate bytes": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": "a\xed\xa0\x80b"}]}',
        "messages.0.content",
    ),
    "surrogate in a content part": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": '
        b'[{"type": "text", "text": "\\udfff"}]}]}',
        "messages.0.content.0.text",
    ),
    "arrays nested 100k deep": (_DEEP, None),
    "objects nested 100k deep": (_DEEP_OBJECT, None),
    "an integer of 5000 digits": (
        b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": '
        + b"7" * 5000
        + b"}",
        None,
    ),
}


@pytest.mark.parametrize("case", list(NOT_TEXT))
def test_text_that_is_not_unicode_or_json_too_deep_gets_an_openai_400(server, case):
    body, param = NOT_TEXT[case]
    error = assert_openai_error(post(server, body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == ("invalid_text" if param else "invalid_json")
    assert_still_serving(server)


# -- 3. tokenizing off the event loop ----------------------------------------------------------


def test_health_answers_at_once_while_requests_are_being_tokenized(server, monkeypatch):
    """Issue: 8 bodies of ~5 MB stalled /health for 11.6 s, their tokenizing ran on the loop.

    The encode is made to block for 3 s (as a body of megabytes does on a slow CPU): /health must
    still answer in well under that while three requests are in it.
    """
    engine = server.engine
    real_encode = engine.encode_request
    entered = threading.Event()

    def slow_encode(messages):
        entered.set()
        time.sleep(3)  # blocking, like the tokenizer: an event loop running this stalls
        return real_encode(messages)

    monkeypatch.setattr(engine, "encode_request", slow_encode)
    with ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(post, server, chat(f"question {i}", max_tokens=2)) for i in range(3)]
        assert entered.wait(30)
        t0 = time.monotonic()
        health = httpx.get(f"{server.url}/health", timeout=60)
        waited = time.monotonic() - t0
        results = [f.result() for f in pending]
    assert health.status_code == 200
    assert waited < 1.5, f"/health took {waited:.2f}s while requests were being tokenized"
    assert all(answer(r) for r in results)


# -- 5. parameters the server does not implement ----------------------------------------------

UNSUPPORTED = {
    "tools": [{"type": "function", "function": {"name": "ls", "parameters": {}}}],
    "tool_choice": "auto",
    "functions": [{"name": "ls", "parameters": {}}],
    "logprobs": True,
    "top_logprobs": 2,
    "response_format": {"type": "json_object"},
    "logit_bias": {"42": 5},
    "presence_penalty": 0.5,
    "frequency_penalty": -1,
}


@pytest.mark.parametrize("param", list(UNSUPPORTED))
def test_an_unimplemented_parameter_is_refused_by_name(server, param):
    error = assert_openai_error(post(server, chat("hi", **{param: UNSUPPORTED[param]})), 400)
    assert error["param"] == param and error["code"] == "unsupported_parameter"
    assert f"'{param}'" in error["message"]


def test_the_defaults_clients_send_for_those_parameters_are_accepted(server):
    harmless = {
        "tools": None,
        "tool_choice": "none",
        "logprobs": False,
        "top_logprobs": None,
        "response_format": {"type": "text"},
        "logit_bias": {},
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "parallel_tool_calls": True,
    }
    assert answer(post(server, chat("hi", max_tokens=2, **harmless)))
    error = assert_openai_error(post(server, chat("hi", logprobs=1)), 400)  # 1 is no bool here
    assert error["param"] == "logprobs"


# -- 4. header timeout and connection cap, on `genpi serve` itself ----------------------------


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (seconds from now)."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, float("inf")  # still open after ``limit`` seconds
    except ConnectionResetError:
        pass
    return data, time.monotonic() - t0


def _get_health(sock: socket.socket) -> bytes:
    """One keep-alive GET /health on ``sock``: the response head and body."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_stalled_headers_are_closed_and_connections_over_the_cap_refused(tiny_model_dir):
    """Issue: 1,000 connections stopped mid-headers were all held open, indefinitely."""
    timeout, cap = 2.0, 3
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    env.pop("GENPI_API_KEY", None)
    cmd = serve_command(
        str(tiny_model_dir), port, "--header-timeout", str(timeout), "--max-connections", str(cap)
    )
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    sockets: list[socket.socket] = []

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(sock)
        return sock

    try:
        wait_until_healthy(proc, url, timeout=120)
        time.sleep(0.3)  # the poll's own connections are closed by now

        # A connection that stops in the middle of its headers is answered 408 and closed.
        stalled = [connect() for _ in range(cap)]
        for sock in stalled:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        # Meanwhile the cap is full: one more connection gets a 503 at once, then is closed.
        data, closed_after = _read_until_closed(connect(), 10)
        assert data.startswith(b"HTTP/1.1 503"), data
        assert b"too_many_connections" in data and closed_after < 5
        for sock in stalled:
            data, closed_after = _read_until_closed(sock, timeout + 10)
            assert closed_after < timeout + 10, "a connection stalled in its headers stayed open"
            assert data.startswith(b"HTTP/1.1 408"), data

        # The clock restarts for each request of a kept-alive connection: after one answered
        # request, a second one that stalls in its headers is closed as well.
        time.sleep(0.3)
        kept = connect()
        assert _get_health(kept).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /health HTTP/1.1\r\nHo")
        t0 = time.monotonic()
        data, closed_after = _read_until_closed(kept, timeout + 10)
        assert closed_after < timeout + 10 and data.startswith(b"HTTP/1.1 408"), data
        assert time.monotonic() - t0 > timeout / 2  # the timeout, not an instant refusal
        # A slot freed: the server serves again.
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
