"""Helpers for tests and benchmarks: a free port, and a server in a background thread.

A random-weight adapter for them is ``genpi.adapter.make_random_adapter``.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any


def serve_command(model: str, port: int, *extra: str) -> list[str]:
    """``python -m genpi serve`` for ``model`` in fp32 on the CPU, on 127.0.0.1:``port``."""
    cmd = [sys.executable, "-m", "genpi", "serve", "--model", model, "--dtype", "fp32"]
    return [*cmd, "--device", "cpu", "--port", str(port), *extra]


def wait_until_healthy(proc: Any, url: str, timeout: float) -> None:
    """Poll ``url``/health until it answers 200; raise if ``proc`` exits or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"the server exited ({proc.returncode}): {out}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not come up in {timeout:.0f} s")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)


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
