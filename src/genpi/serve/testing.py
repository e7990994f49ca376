"""Helpers for tests and benchmarks: a random-weight adapter, and a server in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any


def make_random_adapter(
    base: str, prompt: Any, out: str | Path, *, seed: int = 1, rank: int = 4
) -> Path:
    """A LoRA adapter with random, non-zero weights and genpi's metadata, for ``base`` and ``prompt``.

    It costs what a trained adapter costs to run, but says nothing useful.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from genpi.adapter import AdapterInfo, write_adapter_info
    from genpi.models import load_model, resolve_model

    torch.manual_seed(seed)
    model, _ = load_model(base, dtype="fp32", device="cpu")
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules="all-linear",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    out = Path(out)
    peft_model.save_pretrained(out)
    info = AdapterInfo(
        prompt_fingerprint=prompt.fingerprint,
        prompt_name=prompt.name,
        base_model=base,
        base_weights_sha256=resolve_model(base).provenance.get("weights_sha256"),
        method="random",
    )
    write_adapter_info(out, info, prompt)
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a daemon thread (lifespan included)."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, **limits: Any
    ) -> None:
        """``limits``: ``header_timeout`` and ``max_connections``, as ``genpi serve`` takes them."""
        import uvicorn

        from genpi.serve.connections import uvicorn_options

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(**limits),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
