"""The OpenAI-compatible HTTP API over an ``Engine``: chat completions, models, health.

Errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx status
for anything the client can fix; the server keeps serving after each. Routing is ``router.route``;
``usage.prompt_tokens`` counts the prompt tokens the model actually computed and
``usage.prompt_tokens_saved`` (also the ``x-genpi-prompt-tokens-saved`` header) the ones an
internalized prompt spared; ``x-genpi-stripped-messages`` (and ``genpi.stripped_messages`` in the
body) counts the request's leading messages dropped as that prompt (0: nothing was stripped). A
request may send ``x-genpi-route: off`` to skip routing by prompt (the base model then reads the
whole prompt; used by benchmarks/serve.py for A/B runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genpi.serve.engine import Delta, EngineClosed, Failed, Finished, GenRequest, LoadedModel
from genpi.serve.router import Route, RouteTable, route

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4
DISCONNECT_CHECK_S = 0.5  # how often a non-streaming request checks that its client is still there
# Threads that parse and tokenize request bodies. Few: the tokenizer lock runs one encode at a
# time anyway, and glibc keeps a big body's working set in each thread's own malloc arena, so
# asyncio's default pool (6 threads here) held ~380 MiB more after 3 rounds of near-limit bodies
# than two threads do, and still grew (benchmarks/serve_memory.py).
PREPARE_THREADS = 2
# The seeds a 64-bit torch.Generator takes (signed or unsigned); a larger one failed its batch.
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)
# OpenAI parameters this server does not implement, each with the values that ask for nothing
# (what clients send by default): any other value gets a 400 naming the parameter, rather than an
# answer that silently ignores it (a JSON mode or a tool call the client then fails to parse).
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, True, False),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "response_format": (None, {"type": "text"}),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type_,
        )

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return _AsciiJSONResponse(body, status_code=self.status, headers=headers)


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error message that quotes a client's text (even a lone
    surrogate, which UTF-8 cannot encode) must still render, or the client gets a plain-text 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


@dataclass
class ServeConfig:
    served_name: str  # the base model's name in /v1/models and in requests
    api_key: str | None = None
    max_body_bytes: int = 4 << 20
    default_max_tokens: int = 256


@dataclass
class ChatParams:
    model: str
    messages: list[dict[str, str]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    ignore_eos: bool


def _check_key(request: Request, config: ServeConfig) -> None:
    if not config.api_key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise ApiError(
            401, "missing API key: send it as 'Authorization: Bearer KEY'", code="invalid_api_key"
        )
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        key.strip().encode(), config.api_key.encode()
    ):
        raise ApiError(401, "incorrect API key provided", code="invalid_api_key")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    too_big = ApiError(
        413,
        f"request body is larger than the server's limit of {limit} bytes",
        code="request_too_large",
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it.

    CPU-bound on a large body: the server calls it off the event loop.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(
            400,
            "the request body is not valid JSON here: it is nested too deeply",
            code="invalid_json",
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of 5000 digits
        raise ApiError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    bad = _lone_surrogate(data)
    if bad is not None:
        raise ApiError(
            400,
            f"'{bad}' holds a lone UTF-16 surrogate (such as \\ud800), which is not text: "
            "escape a character outside the BMP as a surrogate pair, or send it as UTF-8",
            param=bad,
            code="invalid_text",
        )
    return data


def _lone_surrogate(data: Any) -> str | None:
    """The path (``messages.0.content``) of the first string holding a lone surrogate, if any.

    JSON's ``\\ud800`` escape decodes to one, and neither the tokenizer nor a UTF-8 response can
    take it. Iterative, so that a deeply nested body cannot exhaust the stack here.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "(body)"
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((f"{path}.{key}" if path else str(key), key))
                stack.append((f"{path}.{key}" if path else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None


def _content_text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        texts = []
        for part in content:
            if not (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                raise ApiError(
                    400,
                    f"messages[{i}].content: only text parts are supported",
                    param=f"messages.{i}.content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string", param=f"messages.{i}.content")


def _number(data: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(
            400, f"'{key}' must be a number between {low} and {high}, got {value!r}", param=key
        )
    return float(value)


def _same_json(value: Any, harmless: Any) -> bool:
    """JSON equality: ``0 == 0.0``, but not Python's ``True == 1`` (``logprobs: 1`` is no bool)."""
    if isinstance(value, bool) or isinstance(harmless, bool):
        return value is harmless
    if isinstance(value, int | float) and isinstance(harmless, int | float):
        return value == harmless
    return type(value) is type(harmless) and value == harmless


def parse_chat(data: dict[str, Any]) -> ChatParams:
    """Validate a chat completion request body (OpenAI's fields; unknown ones are ignored, the
    OpenAI ones this server does not implement are refused: see ``UNSUPPORTED``)."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400,
            "'model' is required: name the base model or an adapter (see /v1/models)",
            param="model",
        )
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400, "'messages' must be a non-empty list of {role, content} objects", param="messages"
        )
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(
                400,
                f"messages[{i}] must be an object with 'role' and 'content'",
                param=f"messages.{i}",
            )
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ROLES:
            raise ApiError(
                400,
                f"messages[{i}].role {m.get('role')!r} is not supported; use one of {', '.join(ROLES)}",
                param=f"messages.{i}.role",
            )
        messages.append({"role": role, "content": _content_text(m.get("content"), i)})
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ApiError(
            400, f"'max_tokens' must be a positive integer, got {max_tokens!r}", param="max_tokens"
        )
    n = data.get("n", 1)
    if n not in (1, None):
        raise ApiError(400, "only n=1 is supported", param="n")
    stop = data.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or not all(isinstance(s, str) for s in stop)
        or len(stop) > MAX_STOP_STRINGS
    ):
        raise ApiError(
            400,
            f"'stop' must be a string or a list of at most {MAX_STOP_STRINGS} strings",
            param="stop",
        )
    seed = data.get("seed")
    if seed is not None and (
        isinstance(seed, bool)
        or not isinstance(seed, int)
        or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]
    ):
        raise ApiError(
            400,
            f"'seed' must be an integer from -2**63 to 2**64-1 (a 64-bit seed), got {seed!r}",
            param="seed",
        )
    stream = data.get("stream") or False
    options = data.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise ApiError(
            400, "'stream' must be a boolean and 'stream_options' an object", param="stream"
        )
    top_p = _number(data, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise ApiError(400, "'top_p' must be greater than 0", param="top_p")
    # OpenAI's default; below engine.MIN_TEMPERATURE (1e-5) the engine decodes greedily
    temperature = _number(data, "temperature", 1.0, 0.0, 2.0)
    for key, harmless in UNSUPPORTED.items():
        if key in data and not any(_same_json(data[key], h) for h in harmless):
            raise ApiError(
                400,
                f"'{key}' is not supported by this server (genpi serve generates plain text only); "
                "remove it from the request",
                param=key,
                code="unsupported_parameter",
            )
    return ChatParams(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=tuple(s for s in stop if s),
        ignore_eos=bool(data.get("ignore_eos", False)),
    )


def create_app(loaded: LoadedModel, config: ServeConfig) -> FastAPI:
    engine = loaded.engine
    base_names = tuple(dict.fromkeys([config.served_name, loaded.base_ref]))
    table = RouteTable(base_names=base_names, prompts=dict(loaded.prompts))
    created = int(time.time())

    preparing = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="genpi-prepare")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            # Uvicorn has already waited for in-flight HTTP requests; finish whatever is queued.
            await asyncio.to_thread(engine.stop)
            preparing.shutdown(wait=False)

    app = FastAPI(
        title="genpi serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Still a bug to fix (Starlette logs the traceback), but the client gets OpenAI's shape.
        return ApiError(
            500,
            f"internal server error ({type(exc).__name__}); the server logged the details",
            type_="server_error",
            code="internal_error",
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return ApiError(exc.status_code, str(exc.detail), code=code).response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "queued": engine.queued,
            "running": engine.running,
            "batches": engine.batches_run,
            "cancelled": engine.rows_cancelled,
            "joined": engine.rows_joined,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_key(request, config)
        data = [
            {
                "id": config.served_name,
                "object": "model",
                "created": created,
                "owned_by": "genpi",
                "root": loaded.base_path,
                "parent": None,
                "max_model_len": engine.max_context,
            }
        ]
        for name, directory in loaded.adapter_dirs.items():
            prompt = loaded.prompts[name]
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "genpi",
                    "root": str(directory),
                    "parent": config.served_name,
                    "max_model_len": engine.max_context,
                    "prompt_name": prompt.name,
                    "prompt_fingerprint": prompt.fingerprint,
                }
            )
        return {"object": "list", "data": data}

    def prepare(body: bytes, by_prompt: bool) -> tuple[ChatParams, Route, list[int], int, int, int]:
        """The request, validated, routed and tokenized (blocking: run off the event loop)."""
        params = parse_chat(parse_json(body))
        if not table.knows(params.model):
            raise ApiError(
                404,
                f"the model {params.model!r} does not exist; this server has: "
                f"{', '.join(table.model_names())}",
                param="model",
                code="model_not_found",
            )
        chosen = route(table, params.model, params.messages, by_prompt=by_prompt)
        input_ids, prefix_len = engine.encode_request(chosen.messages)
        saved = len(engine.encode(params.messages)) - len(input_ids) if chosen.stripped else 0
        room = engine.max_context - len(input_ids)
        max_tokens = params.max_tokens or min(config.default_max_tokens, room)
        if room < 1 or max_tokens > room:
            raise ApiError(
                400,
                f"this model's maximum context length is {engine.max_context} tokens; the messages "
                f"take {len(input_ids)} and max_tokens asks for {max_tokens}: shorten the messages or "
                "lower max_tokens",
                param="max_tokens" if room >= 1 else "messages",
                code="context_length_exceeded",
            )
        return params, chosen, input_ids, saved, max_tokens, prefix_len

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        _check_key(request, config)
        body = await _read_body(request, config.max_body_bytes)
        by_prompt = request.headers.get("x-genpi-route", "on").lower() != "off"
        # Parsing and tokenizing a body of megabytes takes a CPU for seconds: in a thread, so that
        # the event loop keeps answering /health and streaming other requests' tokens meanwhile.
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(preparing, prepare, body, by_prompt)
        params, chosen, input_ids, saved, max_tokens, prefix_len = prepared
        events: asyncio.Queue[Any] = asyncio.Queue()
        gen = GenRequest(
            adapter=chosen.adapter,
            input_ids=input_ids,
            on_event=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=params.stop,
            ignore_eos=params.ignore_eos,
            prefix_len=prefix_len,
        )
        try:
            engine.submit(gen)
        except EngineClosed:
            raise ApiError(
                503, "the server is shutting down", type_="server_error", code="shutting_down"
            ) from None
        usage = {"prompt_tokens": len(input_ids), "prompt_tokens_saved": saved}
        headers = _route_headers(chosen, saved)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if params.stream:
            stream = _stream(gen, events, params, completion_id, usage)
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        try:
            checked = time.monotonic()
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=DISCONNECT_CHECK_S)
                except TimeoutError:
                    event = None
                if time.monotonic() - checked >= DISCONNECT_CHECK_S:
                    checked = time.monotonic()
                    if await request.is_disconnected():  # nobody waits for the answer: stop it
                        return JSONResponse({}, status_code=499)
                if event is None or isinstance(event, Delta):
                    continue
                if isinstance(event, Failed):
                    raise ApiError(
                        500, event.message, type_="server_error", code="generation_failed"
                    )
                else:
                    break
        finally:
            gen.cancel()  # a handler cancelled before the end frees its slot
        usage.update(
            completion_tokens=event.completion_tokens,
            total_tokens=len(input_ids) + event.completion_tokens,
        )
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": params.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": event.text},
                    "logprobs": None,
                    "finish_reason": event.finish_reason,
                }
            ],
            "usage": usage,
            "genpi": {
                "adapter": chosen.adapter,
                "route": chosen.reason,
                "stripped_messages": chosen.stripped_messages,
            },
        }
        return JSONResponse(body, headers=headers)

    return app


def _route_headers(chosen: Route, saved: int) -> dict[str, str]:
    return {
        "x-genpi-adapter": chosen.adapter or "",
        "x-genpi-route": chosen.reason,
        "x-genpi-prompt-tokens-saved": str(saved),
        "x-genpi-stripped-messages": str(chosen.stripped_messages),
    }


async def _stream(
    gen: GenRequest,
    events: asyncio.Queue[Any],
    params: ChatParams,
    completion_id: str,
    usage: dict[str, int],
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": params.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
            elif isinstance(event, Failed):
                err = {
                    "error": {
                        "message": event.message,
                        "type": "server_error",
                        "param": None,
                        "code": "generation_failed",
                    }
                }
                yield f"data: {json.dumps(err)}\n\n"
                return
            else:
                assert isinstance(event, Finished)
                yield chunk({}, event.finish_reason)
                if params.include_usage:
                    usage = {
                        **usage,
                        "completion_tokens": event.completion_tokens,
                        "total_tokens": usage["prompt_tokens"] + event.completion_tokens,
                    }
                    body = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": params.model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
                return
    finally:
        gen.cancel()  # the client went away (or the stream ended): free the slot
