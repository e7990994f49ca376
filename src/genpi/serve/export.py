"""``genpi export vllm``: the ``vllm serve`` command for the same adapters, and a routing table;
``genpi export agentbench``: AgentBench agents that call ``genpi serve`` (``export_agentbench``).

vLLM serves PEFT adapters as they are (``--enable-lora --lora-modules NAME=DIR``) and answers a
request whose ``model`` names one; it does not strip prompts. The routing table lets a proxy in
front do what ``genpi serve`` does: recognise an internalized prompt by its leading messages,
drop them, and send the rest to the adapter's name.

Run as: genpi export vllm --model smollm2-135m --adapter shell=runs/shell/adapter --out deploy/
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.serve import export_agentbench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        choices=["vllm", "agentbench"],
        help="vllm: a vllm serve command and a routing table; agentbench: AgentBench agents "
        "calling genpi serve",
    )
    parser.add_argument(
        "--model", default=None, help="base model reference (default: the adapters' base)"
    )
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", required=True)
    parser.add_argument(
        "--out",
        default=None,
        help="folder for the files (vllm: vllm_serve.sh, routing.json; agentbench: "
        "genpi_agents.yaml, genpi_assignment.yaml, README.md); default: print",
    )
    parser.add_argument("--port", type=int, default=8000, help="vllm: the port vllm serves on")
    export_agentbench.add_arguments(parser)


def base_model_id(ref: str) -> str:
    """What vLLM loads for a genpi model reference: its hub id when known, else its path."""
    from genpi.models import resolve_model

    resolved = resolve_model(ref)
    return resolved.hf_id or resolved.path


def routing_table(adapters: dict[str, Path], base: str) -> dict[str, Any]:
    """prompt fingerprint -> adapter name, with the prefix and input template a proxy matches."""
    from genpi.adapter import read_adapter_prompt

    routes: dict[str, Any] = {}
    for name, directory in adapters.items():
        prompt = read_adapter_prompt(directory)
        if prompt.fingerprint in routes:
            continue  # the first adapter listed answers a prompt served twice, as in genpi serve
        routes[prompt.fingerprint] = {
            "adapter": name,
            "prompt_name": prompt.name,
            "messages": [dict(m) for m in prompt.messages],
            "input_template": prompt.input_template,
            "student_template": prompt.student_template or prompt.input_template,
        }
    return {
        "base_model": base,
        "rule": (
            "if a request's leading messages equal 'messages' and the next is a user turn that fits "
            "'input_template' ({input} = the task input), replace them with one user turn "
            "'student_template' filled with that input, keep later turns, and set model to 'adapter'"
        ),
        "routes": routes,
    }


def vllm_command(
    base: str, adapters: dict[str, Path], *, port: int = 8000, max_lora_rank: int = 16
) -> list[str]:
    modules = [f"{name}={directory.resolve()}" for name, directory in adapters.items()]
    return [
        "vllm",
        "serve",
        base,
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        str(max(1, len(adapters))),
        "--max-lora-rank",
        str(max_lora_rank),
        "--lora-modules",
        *modules,
    ]


def _lora_rank(adapters: dict[str, Path]) -> int:
    ranks = [
        json.loads((d / "adapter_config.json").read_text()).get("r", 8) for d in adapters.values()
    ]
    # vLLM accepts ranks from a fixed set; pick the smallest that holds every adapter.
    return next((r for r in (8, 16, 32, 64, 128, 256) if r >= max(ranks, default=8)), max(ranks))


def main(args: argparse.Namespace) -> int:
    if args.target == "agentbench":
        return export_agentbench.main(args)
    from genpi.adapter import check_adapter, read_adapter_info, read_adapter_prompt, require_lora
    from genpi.serve.cli import parse_adapters

    adapters = parse_adapters(args.adapter)
    trained_on = {read_adapter_info(d).base_model for d in adapters.values()}
    model_ref = args.model
    if model_ref is None:
        if len(trained_on) != 1:
            raise GenpiError(
                f"the adapters were trained on different models ({sorted(trained_on)}): serve each base apart"
            )
        model_ref = trained_on.pop()
    for directory in adapters.values():
        check_adapter(directory, base_model=model_ref, prompt=read_adapter_prompt(directory))
        require_lora(directory, "vLLM's --enable-lora")
    base = base_model_id(model_ref)
    command = shlex.join(
        vllm_command(base, adapters, port=args.port, max_lora_rank=_lora_rank(adapters))
    )
    table = json.dumps(routing_table(adapters, base), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        print(command)
        print(table, end="")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vllm_serve.sh").write_text(
        f"#!/bin/sh\n# Written by genpi export vllm.\nexec {command}\n"
    )
    (out / "vllm_serve.sh").chmod(0o755)
    (out / "routing.json").write_text(table)
    print(f"wrote {out / 'vllm_serve.sh'} and {out / 'routing.json'}")
    return 0
