"""Synthesis against a real OpenAI-compatible server on 127.0.0.1 that goes down mid-run."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genpi.data import read_jsonl
from genpi.llm import load_backend
from genpi.prompt import load_prompt
from genpi.synth import SynthConfig, synthesize
from genpi.synth.common import StageAborted

sys.path.insert(0, str(Path(__file__).parent))
from synth_scripted import ScriptedBackend  # noqa: E402


@pytest.fixture
def server():
    script = ScriptedBackend()
    state = {"down": False, "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"] += 1
            if state["down"]:
                self.send_response(503)
                self.end_headers()
                return
            text = script._answer(body["messages"])
            payload = {
                "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3},
            }
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1#scripted", state
    httpd.shutdown()
    httpd.server_close()


def test_endpoint_down_then_up_resumes_without_loss(tmp_path, server, example_prompt_path):
    ref, state = server
    backend = load_backend(ref, max_retries=0, timeout=10)
    prompt = load_prompt(example_prompt_path)
    config = SynthConfig(n=8, num_gen_once=4, batch_size=2, max_turns=3, progress=False)
    out = tmp_path / "run"

    def run():
        return synthesize(
            prompt, out, model_backend=backend, generator_backend=backend, config=config
        )

    run()  # a complete run first, to have finished records of every stage
    for name in ("conversations", "outputs", "reasons"):
        (out / f"{name}.jsonl").write_text("")  # as if those stages had not run yet
    state["down"] = True
    with pytest.raises(StageAborted, match="3 failed backend calls in a row"):
        run()
    assert len(read_jsonl(out / "inputs.jsonl")) == 8  # finished records are kept
    state["down"] = False
    run()
    for name in ("inputs", "conversations", "outputs", "reasons"):
        ids = [r["id"] for r in read_jsonl(out / f"{name}.jsonl")]
        assert len(ids) == len(set(ids)) == 8, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["conversations"]["backend_errors"] == 3
