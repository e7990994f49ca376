"""``genpi export agentbench``: AgentBench agents that call a running ``genpi serve``.

AgentBench (v0.2) runs an agent as ``src.client.agents.HTTPAgent``: each round it POSTs the whole
history to ``url`` as ``body`` plus ``{"messages": [...]}`` (its ``role_content_dict`` prompter,
``agent`` turns renamed ``assistant``) and reads the answer with ``return_format``. The files
written here:

- ``genpi_agents.yaml`` (for ``configs/agents/``): one agent per adapter, whose ``model`` is the
  adapter's name. ``genpi serve`` sends a request naming an adapter to that adapter and drops the
  adapter's internalized prompt from its leading messages (``router.route``, rule 1), so the task
  worker keeps sending AgentBench's prompt unchanged and the adapter reads only the task's turns.
- ``genpi_assignment.yaml`` (for ``configs/assignments/``): each adapter paired with its
  AgentBench task (``--task``, or known from the prompt's name), with AgentBench's task
  definitions imported; written when at least one adapter has a task.
- ``README.md``: the commands, step by step.

Run as: genpi export agentbench --url http://127.0.0.1:8000/v1 --adapter os=runs/os/adapter --out deploy/
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from genpi.errors import GenpiError

AGENTS_FILE = "genpi_agents.yaml"
ASSIGNMENT_FILE = "genpi_assignment.yaml"
README_FILE = "README.md"
# AgentBench's default controller address (configs/assignments/definition.yaml).
CONTROLLER = "http://localhost:5000/api"
# AgentBench v0.2's dev split of each task whose prompt ../shared/agentbench/prompts/ holds,
# by the name those prompt files give.
KNOWN_TASKS: dict[str, str] = {
    "agentbench-os": "os-dev",
    "agentbench-webshop": "webshop-dev",
    "agentbench-mind2web": "m2w-dev",
}
TASK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("agentbench target")
    group.add_argument(
        "--url",
        default=None,
        help="where genpi serve answers, http://HOST:PORT/v1 (agentbench: required)",
    )
    group.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME=TASK[,TASK]",
        help="the AgentBench task(s) adapter NAME runs (default: os-dev, webshop-dev or m2w-dev "
        "for AgentBench's own prompts)",
    )
    group.add_argument(
        "--max-tokens", type=int, default=512, help="max_tokens in each agent's request body"
    )
    group.add_argument(
        "--api-key",
        default=None,
        help="written into the agents' Authorization header (when genpi serve has --api-key)",
    )


def chat_url(url: str | None) -> str:
    """The chat completions endpoint for ``--url`` (``http://HOST:PORT/v1``, or that endpoint)."""
    if not url:
        raise GenpiError(
            "export agentbench needs --url http://HOST:PORT/v1: where genpi serve listens, "
            "as AgentBench's assigner will reach it"
        )
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise GenpiError(
            f"--url {url!r}: give it as http://HOST:PORT/v1 (e.g. http://127.0.0.1:8000/v1)"
        )
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        raise GenpiError(
            f"--url {url!r}: end it with /v1 (genpi serve's API root), e.g. http://{parsed.netloc}/v1"
        )
    return f"{base}/chat/completions"


def parse_tasks(specs: list[str], adapters: list[str]) -> dict[str, list[str]]:
    """``NAME=TASK[,TASK]`` flags into adapter name -> AgentBench task names."""
    tasks: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        names = [t.strip() for t in value.split(",") if t.strip()]
        if not sep or not name or not names:
            raise GenpiError(f"--task {spec!r}: write it as NAME=TASK[,TASK] (e.g. os=os-std)")
        if name not in adapters:
            raise GenpiError(
                f"--task {spec!r}: no --adapter is named {name!r}; name one of {', '.join(adapters)}"
            )
        bad = [t for t in names if not TASK_RE.match(t)]
        if bad:
            raise GenpiError(
                f"--task {spec!r}: {bad[0]!r} is not an AgentBench task name (e.g. os-dev, webshop-std)"
            )
        tasks.setdefault(name, []).extend(t for t in names if t not in tasks.get(name, []))
    return tasks


def agent_entry(name: str, url: str, *, max_tokens: int, api_key: str | None) -> dict[str, Any]:
    """One AgentBench agent (``configs/agents/openai-chat.yaml``'s shape) for adapter ``name``."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return {
        "module": "src.client.agents.HTTPAgent",
        "parameters": {
            "name": name,
            "url": url,
            "headers": headers,
            # temperature 0 as AgentBench's openai-chat.yaml; model: genpi serve's adapter name.
            "body": {"model": name, "temperature": 0, "max_tokens": max_tokens},
            "prompter": {"name": "role_content_dict", "args": {"agent_role": "assistant"}},
            "return_format": "{response[choices][0][message][content]}",
        },
    }


def assignment(tasks: dict[str, list[str]], agents_file: str = AGENTS_FILE) -> dict[str, Any]:
    """An AgentBench assignment config (``configs/assignments/``) running each agent's tasks.

    Self-contained, unlike AgentBench's default.yaml: it imports the task definitions and only
    the genpi agents, so that AgentBench's other agent files need no API keys.
    """
    all_tasks = list(dict.fromkeys(t for names in tasks.values() for t in names))
    return {
        "definition": {
            "task": {
                "overwrite": {
                    "module": "src.client.TaskClient",
                    "parameters": {"controller_address": CONTROLLER},
                },
                "import": "../tasks/task_assembly.yaml",
            },
            "agent": {"import": f"../agents/{agents_file}"},
        },
        "concurrency": {
            "task": {t: 1 for t in all_tasks},
            "agent": {name: 1 for name in tasks},
        },
        "assignments": [{"agent": name, "task": names} for name, names in tasks.items()],
        "output": "outputs/genpi-{TIMESTAMP}",
    }


def readme(url: str, base: str, adapters: dict[str, Path], tasks: dict[str, list[str]]) -> str:
    """The step-by-step commands for these files."""
    serve_flags = " ".join(f"--adapter {n}={d.resolve()}" for n, d in adapters.items())
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 8000
    all_tasks = list(dict.fromkeys(t for names in tasks.values() for t in names))
    lines = [
        "# AgentBench with genpi serve",
        "",
        "Written by `genpi export agentbench`, for AgentBench v0.2 (the release whose prompts",
        "the adapters must have internalized); genpi's docs/agentbench.md explains each step.",
        "",
        "1. Serve the base model and the adapters (keep it running):",
        "",
        f"       genpi serve --model {base} {serve_flags} --host {host} --port {port}",
        "",
        "2. Copy the configs into your AgentBench checkout:",
        "",
        f"       cp {AGENTS_FILE} AgentBench/configs/agents/",
    ]
    if tasks:
        lines.append(f"       cp {ASSIGNMENT_FILE} AgentBench/configs/assignments/")
    lines += [
        "",
        "3. Check one agent (type a line, read the adapter's answer; Ctrl-C ends):",
        "",
        f"       cd AgentBench && python -m src.client.agent_test --config "
        f"configs/agents/{AGENTS_FILE} --agent {next(iter(adapters))}",
        "",
    ]
    if tasks:
        workers = " ".join(f"{t} 1" for t in all_tasks)
        lines += [
            "4. Start AgentBench's controller and one worker per task (ports 5000 and up; the",
            "   webshop and mind2web workers run in AgentBench's Docker images):",
            "",
            f"       python -m src.start_task -a -s {workers}",
            "",
            "5. Run the assigner (results in outputs/genpi-TIMESTAMP/AGENT/TASK/):",
            "",
            f"       python -m src.assigner --config configs/assignments/{ASSIGNMENT_FILE}",
            "",
        ]
    else:
        lines += [
            "4. No adapter has an AgentBench task: export again with --task NAME=TASK (e.g.",
            "   os-dev, webshop-dev, m2w-dev) to get the assignment file and steps 4-5.",
            "",
        ]
    lines += ["Agents (model = the adapter genpi serve routes to):", ""]
    for name in adapters:
        assigned = ", ".join(tasks.get(name, [])) or "no task: add --task NAME=TASK"
        lines.append(f"- {name}: {assigned}")
    lines += [
        "",
        "Each answer's header x-genpi-stripped-messages says how many of the request's leading",
        "messages genpi serve dropped as the adapter's prompt; 0 means AgentBench sent another",
        "prompt than the adapter internalized, and the adapter read it whole.",
        "",
    ]
    return "\n".join(lines)


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def main(args: argparse.Namespace) -> int:
    from genpi.adapter import check_adapter, read_adapter_prompt
    from genpi.serve.cli import parse_adapters

    url = chat_url(args.url)
    if args.max_tokens < 1:
        raise GenpiError(f"--max-tokens must be a positive integer, not {args.max_tokens}")
    adapters = parse_adapters(args.adapter)
    tasks = parse_tasks(args.task, list(adapters))
    header = [f"# Written by genpi export agentbench: AgentBench agents calling {url}."]
    bases = []
    for name, directory in adapters.items():
        prompt = read_adapter_prompt(directory)
        bases.append(check_adapter(directory, prompt=prompt).base_model)
        header.append(
            f"# {name}: {directory.resolve()} (prompt {prompt.name}, {prompt.fingerprint[:12]})"
        )
        if name not in tasks and prompt.name in KNOWN_TASKS:
            tasks[name] = [KNOWN_TASKS[prompt.name]]
    # The assignment lists the adapters in --adapter order.
    tasks = {name: tasks[name] for name in adapters if name in tasks}
    agents = {
        name: agent_entry(name, url, max_tokens=args.max_tokens, api_key=args.api_key)
        for name in adapters
    }
    agents_text = "\n".join(header) + "\n" + _yaml(agents)
    if args.out is None:
        print(agents_text, end="")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / AGENTS_FILE).write_text(agents_text)
    written = [out / AGENTS_FILE]
    if tasks:
        text = "# Written by genpi export agentbench.\n" + _yaml(assignment(tasks))
        (out / ASSIGNMENT_FILE).write_text(text)
        written.append(out / ASSIGNMENT_FILE)
    # genpi serve holds one base: --model, else the adapters' when they agree, else a placeholder.
    base = args.model or (bases[0] if len(set(bases)) == 1 else "BASE")
    (out / README_FILE).write_text(readme(url, base, adapters, tasks))
    written.append(out / README_FILE)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
