"""``genpi serve`` as a real process (SIGTERM drains), its start-up checks, and ``genpi export vllm``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from genpi.cli import main as genpi_main
from genpi.serve.testing import free_port, serve_command, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_drains_the_request_in_flight_then_exits(tiny_model_dir, tiny_adapter_dir):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "GENPI_API_KEY": "k",
    }
    cmd = serve_command(str(tiny_model_dir), port, "--adapter", f"shell={tiny_adapter_dir}")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url, timeout=120)
        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401  # $GENPI_API_KEY is on
        body = {
            "model": "shell",
            "messages": [{"role": "user", "content": "keep going"}],
            "max_tokens": 120,
            "ignore_eos": True,
            "stream": True,
            "temperature": 0,
            "stream_options": {"include_usage": True},
        }
        chunks: list[dict] = []
        started = threading.Event()

        def stream() -> None:
            headers = {"Authorization": "Bearer k"}
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120
            ) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunks.append(json.loads(line[6:]))
                        started.set()

        client = threading.Thread(target=stream)
        client.start()
        assert started.wait(60), "no token streamed"
        proc.send_signal(signal.SIGTERM)
        client.join(120)
        # uvicorn re-raises the signal once drained: the exit is SIGTERM's, after a clean shutdown.
        assert proc.wait(60) in (0, -signal.SIGTERM)
        log = proc.stdout.read()
        assert "Traceback" not in log, log
        # The request in flight got its whole answer, although SIGTERM came first.
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finish[-1] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 120
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_an_adapter_trained_on_another_base(
    tiny_model_dir, tiny_adapter_dir, tmp_path, capsys
):
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other)
    code = genpi_main(["serve", "--model", str(other), "--adapter", f"shell={tiny_adapter_dir}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "was trained on" in err and f"--model {tiny_model_dir}" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("shell", "NAME=DIR"),
        ("bad.name={dir}", "may hold only"),
        ("x=/nonexistent", "not an adapter directory"),
    ],
)
def test_serve_rejects_a_bad_adapter_flag(tiny_adapter_dir, capsys, spec, message):
    assert genpi_main(["serve", "--adapter", spec.format(dir=tiny_adapter_dir)]) == 2
    assert message in capsys.readouterr().err


def test_export_vllm_writes_the_command_and_the_routing_table(
    tiny_model_dir, tiny_adapter_dir, tmp_path, example_prompt_path
):
    from genpi.prompt import load_prompt

    out = tmp_path / "deploy"
    code = genpi_main(
        ["export", "vllm", "--adapter", f"shell={tiny_adapter_dir}", "--out", str(out)]
    )
    assert code == 0
    script = (out / "vllm_serve.sh").read_text()
    assert f"vllm serve {tiny_model_dir} --port 8000 --enable-lora" in script
    assert f"--lora-modules shell={tiny_adapter_dir.resolve()}" in script
    table = json.loads((out / "routing.json").read_text())
    prompt = load_prompt(example_prompt_path)
    route = table["routes"][prompt.fingerprint]
    assert route["adapter"] == "shell"
    assert route["messages"] == [dict(m) for m in prompt.messages]
    assert route["input_template"] == prompt.input_template


def test_export_uses_the_hub_id_of_an_embedded_base(tiny_adapter_dir, tmp_path, capsys):
    adapter = tmp_path / "embedded-adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    info = json.loads((adapter / "genpi_adapter.json").read_text())
    (adapter / "genpi_adapter.json").write_text(json.dumps({**info, "base_model": "smollm2-135m"}))
    assert genpi_main(["export", "vllm", "--adapter", f"shell={adapter}"]) == 0
    assert "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct" in capsys.readouterr().out
