"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genpi.llm import BackendError, SamplingParams, load_backend
from genpi.llm.openai_http import OpenAIBackend


class Script:
    """What the fake server does: a list of status codes to answer in order, then 200s."""

    def __init__(self, statuses=(), delay=0.0):
        self.statuses = list(statuses)
        self.delay = delay
        self.requests = []
        self.lock = threading.Lock()


def make_handler(script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                status = script.statuses.pop(0) if script.statuses else 200
            if script.delay:
                time.sleep(script.delay)
            if status != 200:
                payload = {"error": {"message": "scripted failure"}}
            else:
                last = body["messages"][-1]["content"]
                payload = {
                    "choices": [
                        {"message": {"content": f"echo: {last} STOP tail"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3},
                }
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def server():
    servers = []

    def start(script):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def conv(text):
    return [{"role": "user", "content": text}]


def test_generates_with_settings_and_cuts_at_stop(server, monkeypatch):
    monkeypatch.setenv("GENPI_API_KEY", "sk-secret-value")
    script = Script()
    url = server(script)
    backend = load_backend(f"{url}#served-model", concurrency=4)
    params = SamplingParams(max_new_tokens=9, temperature=0.5, top_p=0.8, seed=1, stop=(" STOP",))
    gens = backend.generate([conv("a"), conv("b"), conv("c")], params)
    assert [g.text for g in gens] == ["echo: a", "echo: b", "echo: c"]  # order kept
    assert all(g.finish_reason == "stop" and g.prompt_tokens == 11 for g in gens)
    body = script.requests[0]["body"]
    assert body["model"] == "served-model" and body["max_tokens"] == 9
    assert body["temperature"] == 0.5 and body["top_p"] == 0.8 and body["stop"] == [" STOP"]
    assert script.requests[0]["auth"] == "Bearer sk-secret-value"
    assert "sk-secret" not in repr(backend) and "sk-secret" not in backend.name
    assert "continue_final_message" not in body


def test_a_final_assistant_message_asks_the_server_to_continue_it(server):
    script = Script()
    backend = load_backend(f"{server(script)}#served-model")
    backend.generate([[*conv("list fruits"), {"role": "assistant", "content": "1."}]])
    body = script.requests[0]["body"]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_retries_500_twice_then_succeeds(server):
    script = Script(statuses=[500, 500])
    backend = OpenAIBackend(server(script), "m", backoff=0.01)
    (gen,) = backend.generate([conv("x")])
    assert gen.text.startswith("echo: x")
    assert len(script.requests) == 3


def test_client_error_is_not_retried(server):
    script = Script(statuses=[400])
    backend = OpenAIBackend(server(script), "m", backoff=0.01)
    with pytest.raises(BackendError, match="HTTP 400"):
        backend.generate([conv("x")])
    assert len(script.requests) == 1


def test_server_that_never_answers_fails_within_its_timeout(server):
    script = Script(delay=30)
    backend = OpenAIBackend(server(script), "m", timeout=0.5, max_retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"failed after 2 attempt\(s\): no answer within 0.5 s"):
        backend.generate([conv("x")])
    assert time.monotonic() - start < 5


def test_connection_refused_is_a_clear_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="connection failed"):
        backend.generate([conv("x")])
