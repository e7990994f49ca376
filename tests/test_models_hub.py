"""A hub model id that cannot be fetched fails fast with a line saying what to do: at once under
HF_HUB_OFFLINE, after one short attempt otherwise. Nothing here leaves the machine: the hub
endpoint is a closed port on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import genpi

SRC = str(Path(genpi.__file__).resolve().parents[1])  # the checkout under test, in subprocesses
REPO = "genpi-test/no-such-model"

LOAD = """
import sys, time
import transformers.models.auto.modeling_auto  # imported before the clock starts
from genpi.models import ModelError, load_model
start = time.perf_counter()
try:
    model, _ = load_model(sys.argv[1], device="cpu", dtype="fp32")
    print("LOADED", type(model).__name__)
except ModelError as exc:
    print("ERROR", exc)
print(f"SECONDS {time.perf_counter() - start:.2f}")
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        PYTHONPATH=SRC,
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",  # refused at once: never the network
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(tmp_path / "hf-cache"),
        TRANSFORMERS_VERBOSITY="error",
        **extra,
    )
    return env


def _load(ref: str, env: dict[str, str]) -> tuple[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, ref], env=env, capture_output=True, text=True, timeout=300
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return lines[-2], float(lines[-1].split()[1])


def test_offline_hub_id_fails_at_once_saying_what_to_do(tmp_path):
    line, seconds = _load(REPO, _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert line == (
        f"ERROR model {REPO!r} is not a local path or a cached model and the hub cannot be "
        f"reached (HF_HUB_OFFLINE is set): download it first (hf download {REPO}) or pass a "
        "local directory or a .gguf file"
    )
    assert seconds < 5


def test_unreachable_hub_fails_after_one_short_attempt(tmp_path):
    line, seconds = _load(REPO, _env(tmp_path))
    assert line.startswith(f"ERROR model {REPO!r} is not a local path or a cached model")
    assert "Connection refused" in line and f"(hf download {REPO})" in line
    assert seconds < 10  # transformers alone retries for ~45 s


def test_a_cached_hub_model_loads_while_the_hub_is_unreachable(tmp_path, tiny_model_dir):
    commit = "0" * 40
    cache = tmp_path / "hf-cache" / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(tiny_model_dir, cache / "snapshots" / commit)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(commit)
    for extra in ({"HF_HUB_OFFLINE": "1"}, {}):
        line, seconds = _load(REPO, _env(tmp_path, **extra))
        assert line == "LOADED LlamaForCausalLM"
        assert seconds < 30


def test_cli_prints_one_line_for_an_unreachable_hub_model(tmp_path, example_prompt_path):
    argv = ["chat", "--prompt", str(example_prompt_path), "--model", REPO, "--no-prompt"]
    result = subprocess.run(
        [sys.executable, "-m", "genpi", *argv, "--input", "x"],
        env=_env(tmp_path, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"genpi: error: model {REPO!r} is not a local path")
    assert f"hf download {REPO}" in result.stderr and result.stderr.count("\n") == 1
