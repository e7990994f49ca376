"""Does ``genpi serve`` leak memory? The same mixed load, several rounds, the server's RSS after each.

A ``genpi serve`` process (its own, so the RSS is the server's alone) on 127.0.0.1 gets, per
round: ordinary chat requests from concurrent clients (greedy, sampled, streamed, and the extreme
sampling values that used to fail a batch), bodies just under ``--max-body-bytes`` (read,
tokenized, refused as too long for the context), malformed ones (lone surrogates, JSON nested
100k deep, unsupported parameters) and connections that stall in their headers. Memory that
grows in round 1 and then stays flat is warm-up (allocator arenas, tokenizer and torch caches);
memory that grows by a similar amount every round is a leak.

Run as: PYTHONPATH=src python benchmarks/serve_memory.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def memory(pid: int) -> str:
    """RSS of ``pid`` in MiB, from /proc: current, peak, and how much is anonymous vs file pages
    (file pages are mapped files such as weights read by mmap, not the heap)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()

    def mib(key: str) -> str:
        return f"{int(fields[key].split()[0]) / 1024:.0f}"

    return (
        f"RSS {mib('VmRSS')} MiB (peak {mib('VmHWM')}; anon {mib('RssAnon')}, "
        f"file {mib('RssFile')})"
    )


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:

    from genpi.serve.testing import serve_command, wait_until_healthy

    extra = ["--threads", "1", "--max-body-bytes", str(args.body_bytes), "--header-timeout", "2"]
    cmd = serve_command(args.model, port, *extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    env.pop("GENPI_API_KEY", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(proc, f"http://127.0.0.1:{port}", timeout=300)
    except RuntimeError as exc:
        proc.kill()
        raise SystemExit(f"{exc}: {' '.join(cmd)}") from None
    return proc


def one_round(url: str, port: int, args: argparse.Namespace, rng: random.Random) -> dict:
    import httpx

    def post(body: dict | bytes) -> int:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if isinstance(body, dict) and body.get("stream"):
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", content=content, headers=headers, timeout=600
            ) as r:
                for _ in r.iter_lines():
                    pass
                return r.status_code
        r = httpx.post(f"{url}/v1/chat/completions", content=content, headers=headers, timeout=600)
        return r.status_code

    def chat(i: int) -> dict:
        body = {
            "model": args.model,
            "messages": [{"role": "user", "content": f"Question {i}: list three colours."}],
            "max_tokens": args.max_tokens,
            "ignore_eos": True,
        }
        extra = [
            {"temperature": 0},
            {"temperature": 0.8, "seed": i},
            {"temperature": 1e-300},
            {"temperature": 1.0, "top_p": 1e-300},
            {"temperature": 1.0, "seed": 2**64},  # refused at the door
            {"temperature": 0, "stream": True, "stream_options": {"include_usage": True}},
        ][i % 6]
        return {**body, **extra}

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    filler = " ".join(rng.choice(words) for _ in range(args.body_bytes // 6))
    big = {"model": args.model, "messages": [{"role": "user", "content": filler}]}
    big_bytes = json.dumps(big).encode()[: args.body_bytes - 64]
    big_bytes = big_bytes[: big_bytes.rfind(b" ")] + b'"}]}'  # valid JSON, under the limit
    bad = [
        b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800"}]}',
        b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        json.dumps({**chat(0), "tools": [{"type": "function"}]}).encode(),
        b'{"model": "m", "messages": [',
    ]
    statuses: dict[int, int] = {}
    t0 = time.perf_counter()
    stalled = []
    for _ in range(args.stalled):  # closed by the server after --header-timeout
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
        stalled.append(sock)
    jobs: list[dict | bytes] = [chat(i) for i in range(args.requests)]
    jobs += [big_bytes] * args.big_bodies + bad * 2
    rng.shuffle(jobs)
    with ThreadPoolExecutor(args.concurrency) as pool:
        for status in pool.map(post, jobs):
            statuses[status] = statuses.get(status, 0) + 1
    for sock in stalled:
        sock.close()
    return {"seconds": time.perf_counter() - t0, "statuses": dict(sorted(statuses.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=24, help="chat requests per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--big-bodies", type=int, default=4, help="near-limit bodies per round")
    parser.add_argument("--body-bytes", type=int, default=1 << 20, help="--max-body-bytes")
    parser.add_argument("--stalled", type=int, default=50, help="stalled connections per round")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    args = parser.parse_args()

    from genpi.serve.testing import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, port)
    rng = random.Random(0)
    try:
        print(f"after start-up: {memory(proc.pid)}", flush=True)
        for n in range(1, args.rounds + 1):
            result = one_round(url, port, args, rng)
            time.sleep(args.settle)  # stalled connections closed, threads idle
            print(
                f"after round {n}: {memory(proc.pid)}; "
                f"{result['seconds']:.1f}s, statuses {result['statuses']}",
                flush=True,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
