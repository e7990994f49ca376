"""Connection limits uvicorn lacks: a deadline for a request's headers, and a cap on connections.

Uvicorn's h11 protocol waits for headers forever (its keep-alive timer runs only between
requests, and the first byte of the next request cancels it), so a client that opens connections
and sends half a header holds each one indefinitely; its ``limit_concurrency`` answers 503 only
once a request's headers are complete, so those connections are never refused either. This
subclass closes a connection whose request headers are not all in ``header_timeout`` seconds after
the connection opened (or after its previous response), and answers a connection beyond
``max_connections`` with an immediate 503.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

DEFAULT_HEADER_TIMEOUT = 10.0  # seconds; request headers are a few hundred bytes
DEFAULT_MAX_CONNECTIONS = 512  # well under the usual 1024 open files per process
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle kept-alive connection stays open (uvicorn's default)


def _raw_response(status: str, code: str, type_: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP response with an OpenAI error, written before h11 has seen any request."""
    body = json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def guarded_h11(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> type[asyncio.Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that enforces both limits."""
    import h11  # here, not at the top: ``genpi --help`` need not import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if header_timeout <= 0 or max_connections < 1:
        raise ValueError("header_timeout must be > 0 and max_connections >= 1")
    refused = _raw_response(
        "503 Service Unavailable",
        "too_many_connections",
        "server_error",
        f"the server has its maximum of {max_connections} open connections; retry shortly",
        "retry-after: 1\r\n",
    )
    too_slow = _raw_response(
        "408 Request Timeout",
        "header_timeout",
        "invalid_request_error",
        f"the request headers did not arrive within {header_timeout:g} seconds",
    )

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _refused = False
        _got_bytes = False  # of the request being read: a silent connection gets no 408

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # ``connections`` holds this one too: the (max+1)th is refused.
            if len(self.connections) > max_connections:
                self._refused = True
                transport.write(refused)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            self._got_bytes = True
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # headers complete (or the peer closed)
                self._disarm()

        def on_response_complete(self) -> None:
            self._got_bytes = False
            super().on_response_complete()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self._got_bytes:
                self.transport.write(too_slow)
            self.transport.close()

    return GuardedH11Protocol


def uvicorn_options(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that apply the server's limits."""
    return {
        "http": guarded_h11(header_timeout, max_connections),
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT,
    }
