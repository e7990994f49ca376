"""``genpi serve``: serve a base model and its internalized-prompt adapters over an OpenAI API.

Run as: genpi serve --model smollm2-135m --adapter shell=runs/shell/adapter --port 8000
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from genpi.errors import GenpiError
from genpi.serve.connections import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS

API_KEY_ENV = "GENPI_API_KEY"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
log = logging.getLogger(__name__)


def parse_adapters(specs: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` pairs into an ordered dict, with a clear error for each kind of mistake."""
    adapters: dict[str, Path] = {}
    for spec in specs:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise GenpiError(
                f"--adapter {spec!r}: write it as NAME=DIR (e.g. shell=runs/shell/adapter)"
            )
        if not NAME_RE.match(name):
            raise GenpiError(
                f"--adapter {spec!r}: the name {name!r} may hold only letters, digits, '_' and '-'"
            )
        if name in adapters:
            raise GenpiError(
                f"--adapter {spec!r}: the name {name!r} is given twice; use distinct names"
            )
        path = Path(directory).expanduser()
        if not (path / "adapter_config.json").exists():
            raise GenpiError(
                f"--adapter {spec!r}: {directory!r} is not an adapter directory (no adapter_config.json)"
            )
        adapters[name] = path
    return adapters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="base model reference (default: smollm2-135m)"
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an adapter trained by genpi, served as model NAME (repeatable)",
    )
    parser.add_argument(
        "--served-model-name",
        default=None,
        help="the base model's name in the API (default: --model)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key", default=None, help=f"require this key (default: ${API_KEY_ENV}; none: open)"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=8, help="requests decoded together per adapter"
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=4 << 20, help="largest request body accepted"
    )
    parser.add_argument(
        "--max-context", type=int, default=None, help="context length (default: the model's)"
    )
    parser.add_argument(
        "--default-max-tokens", type=int, default=256, help="when a request sets no max_tokens"
    )
    parser.add_argument("--dtype", default="auto", help="auto, bf16 or fp32")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the best one)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is faster on a CPU shared with other jobs)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a connection has to send a request's headers before it is closed",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections at most; one more is answered 503 and closed",
    )
    parser.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=256.0,
        help="memory for the KV of conversation prefixes that requests repeat (a prompt sent "
        "with every request, earlier rounds), least recently used evicted first; 0 turns it off",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds SIGTERM waits for in-flight requests before exiting",
    )


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from genpi.models import DEFAULT_MODEL
    from genpi.serve.connections import uvicorn_options
    from genpi.serve.engine import load_engine
    from genpi.serve.server import ServeConfig, create_app

    model_ref = args.model or DEFAULT_MODEL
    if args.max_batch_size < 1 or args.max_body_bytes < 1 or args.max_connections < 1:
        raise GenpiError(
            "--max-batch-size, --max-body-bytes and --max-connections must be positive"
        )
    if args.prefix_cache_mb < 0:
        raise GenpiError(f"--prefix-cache-mb must be 0 (off) or more, not {args.prefix_cache_mb}")
    if not args.header_timeout > 0:
        raise GenpiError(
            f"--header-timeout must be a positive number of seconds, not {args.header_timeout}"
        )
    adapters = parse_adapters(args.adapter)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    served_name = args.served_model_name or model_ref
    if served_name in adapters:
        raise GenpiError(f"an adapter is named {served_name!r} like the base model; rename it")
    loaded = load_engine(
        model_ref,
        adapters,
        dtype=args.dtype,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_context=args.max_context,
        prefix_cache_bytes=int(args.prefix_cache_mb * 2**20),
    )
    seen: dict[str, str] = {}
    for name, prompt in loaded.prompts.items():
        if prompt.fingerprint in seen:
            log.warning(
                "adapters %s and %s internalize the same prompt; requests carrying it go to %s "
                "(name %s as the model to reach it)",
                seen[prompt.fingerprint],
                name,
                seen[prompt.fingerprint],
                name,
            )
        else:
            seen[prompt.fingerprint] = name
    config = ServeConfig(
        served_name=served_name,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_body_bytes=args.max_body_bytes,
        default_max_tokens=args.default_max_tokens,
    )
    app = create_app(loaded, config)
    print(
        f"genpi serve: {served_name} + {len(adapters)} adapter(s) "
        f"({', '.join(adapters) or 'none'}) on http://{args.host}:{args.port}/v1",
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=args.drain_timeout,
        **uvicorn_options(args.header_timeout, args.max_connections),
    )
    return 0
