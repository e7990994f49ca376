"""``genpi export agentbench``, and AgentBench-shaped episodes replayed against a real
``genpi serve``: every round routed to its prompt's adapter with the prompt stripped.

The replay sends what AgentBench v0.2's ``HTTPAgent`` sends with the exported agent config: the
whole history each round (``role_content_dict``: ``agent`` turns renamed ``assistant``) merged
into the config's ``body``, POSTed to its ``url`` with its ``headers``, the answer read with its
``return_format`` and appended to the history before the task's next turn.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from genpi.cli import main as genpi_main
from genpi.serve.testing import free_port, serve_command, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
WEBSHOP_DEV = ROOT.parent / "shared" / "webshop" / "dev.jsonl"
HTTP_AGENT = "src.client.agents.HTTPAgent"
RETURN_FORMAT = "{response[choices][0][message][content]}"
TASKS = ("os", "webshop", "mind2web")
MAX_TOKENS = 12


# --- the export on its own (no shared data) ------------------------------------------------


def _export(*argv: str) -> int:
    return genpi_main(["export", "agentbench", *argv])


def test_export_writes_one_http_agent_per_adapter_and_the_assignment(
    tiny_adapter_dir, tiny_model_dir, tmp_path
):
    out = tmp_path / "ab"
    code = _export(
        "--url",
        "http://10.0.0.7:8123/v1/",
        "--adapter",
        f"shell={tiny_adapter_dir}",
        "--adapter",
        f"shell-b={tiny_adapter_dir}",
        "--task",
        "shell=os-dev,os-std",
        "--max-tokens",
        "300",
        "--out",
        str(out),
    )
    assert code == 0
    agents = yaml.safe_load((out / "genpi_agents.yaml").read_text())
    assert list(agents) == ["shell", "shell-b"]
    assert agents["shell"] == {
        "module": HTTP_AGENT,
        "parameters": {
            "name": "shell",
            "url": "http://10.0.0.7:8123/v1/chat/completions",
            "headers": {"Content-Type": "application/json"},
            "body": {"model": "shell", "temperature": 0, "max_tokens": 300},
            "prompter": {"name": "role_content_dict", "args": {"agent_role": "assistant"}},
            "return_format": RETURN_FORMAT,
        },
    }
    assert agents["shell-b"]["parameters"]["body"]["model"] == "shell-b"
    # The example prompt is no AgentBench prompt: only the adapter given --task is assigned.
    assignment = yaml.safe_load((out / "genpi_assignment.yaml").read_text())
    assert assignment == {
        "definition": {
            "task": {
                "overwrite": {
                    "module": "src.client.TaskClient",
                    "parameters": {"controller_address": "http://localhost:5000/api"},
                },
                "import": "../tasks/task_assembly.yaml",
            },
            "agent": {"import": "../agents/genpi_agents.yaml"},
        },
        "concurrency": {"task": {"os-dev": 1, "os-std": 1}, "agent": {"shell": 1}},
        "assignments": [{"agent": "shell", "task": ["os-dev", "os-std"]}],
        "output": "outputs/genpi-{TIMESTAMP}",
    }
    steps = (out / "README.md").read_text()
    assert (
        f"genpi serve --model {tiny_model_dir} --adapter shell={tiny_adapter_dir.resolve()} "
        f"--adapter shell-b={tiny_adapter_dir.resolve()} --host 10.0.0.7 --port 8123"
    ) in steps
    assert "python -m src.start_task -a -s os-dev 1 os-std 1" in steps
    assert "python -m src.assigner --config configs/assignments/genpi_assignment.yaml" in steps
    assert "- shell-b: no task: add --task NAME=TASK" in steps


def test_export_without_out_prints_the_agents_and_can_carry_a_key(
    tiny_adapter_dir, tmp_path, capsys
):
    url = "http://127.0.0.1:8000/v1/chat/completions"
    code = _export("--url", url, "--adapter", f"shell={tiny_adapter_dir}", "--api-key", "k1")
    assert code == 0
    agents = yaml.safe_load(capsys.readouterr().out)
    assert agents["shell"]["parameters"]["url"] == url
    assert agents["shell"]["parameters"]["headers"]["Authorization"] == "Bearer k1"
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--adapter", "shell={dir}"], "needs --url http://HOST:PORT/v1"),
        (["--url", "127.0.0.1:8000/v1", "--adapter", "shell={dir}"], "give it as http://"),
        (["--url", "http://127.0.0.1:8000", "--adapter", "shell={dir}"], "end it with /v1"),
        (["--url", "http://h:1/v1", "--adapter", "shell"], "write it as NAME=DIR"),
        (["--url", "http://h:1/v1", "--adapter", "x=/nonexistent"], "not an adapter directory"),
        (
            ["--url", "http://h:1/v1", "--adapter", "shell={dir}", "--task", "os=os-dev"],
            "no --adapter is named 'os'",
        ),
        (
            ["--url", "http://h:1/v1", "--adapter", "shell={dir}", "--task", "shell="],
            "write it as NAME=TASK",
        ),
        (
            ["--url", "http://h:1/v1", "--adapter", "shell={dir}", "--max-tokens", "0"],
            "--max-tokens must be a positive integer",
        ),
    ],
)
def test_export_refuses_bad_input_naming_the_fix(tiny_adapter_dir, capsys, argv, message):
    assert _export(*[a.format(dir=tiny_adapter_dir) for a in argv]) == 2
    assert message in capsys.readouterr().err


# --- AgentBench-shaped episodes against a real genpi serve -----------------------------------


def _agentbench_turns(messages: Any) -> list[dict[str, str]]:
    """A prompt's chat turns as AgentBench's history holds them (``agent``, not ``assistant``)."""
    role = {"user": "user", "assistant": "agent"}
    return [{"role": role[m["role"]], "content": m["content"]} for m in messages]


def http_agent_inference(agent: dict[str, Any], history: list[dict[str, str]]):
    """``HTTPAgent.inference`` (AgentBench v0.2, src/client/agents/http_agent.py) for one
    config entry, without its retries: (the answer, the HTTP response, the messages sent)."""
    assert agent["module"] == HTTP_AGENT
    params = agent["parameters"]
    assert params["prompter"]["name"] == "role_content_dict"
    args = params["prompter"].get("args", {})
    roles = {"user": args.get("user_role", "user"), "agent": args.get("agent_role", "agent")}
    body = dict(params["body"])
    body["messages"] = [{"role": roles[m["role"]], "content": m["content"]} for m in history]
    resp = httpx.post(params["url"], json=body, headers=params.get("headers", {}), timeout=120)
    assert resp.status_code == 200, resp.text
    return params["return_format"].format(response=resp.json()), resp, body["messages"]


def _os_episode(problems: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A problem of the OS dev split and the OS's outputs for the next rounds (the shape of
    AgentBench's os_interaction task: "The output of the OS:\\n\\n" + output, or empty)."""
    return problems[0]["description"], [
        "The output of the OS:\n\nsucceedsucceed",
        "The output of the OS is empty.",
        "The output of the OS:\n\n1\n2\n3",
    ]


def _webshop_episode(first: dict[str, str]) -> tuple[str, list[str]]:
    """A WebShop dev instruction's first observation, then result and product pages as
    AgentBench's webshop task formats them (``f"Observation:\\n{obs}\\n\\nAvailable Actions:
    \\n{available_actions}"``, the actions being a dict)."""
    goal = first["goal"]
    pages = [
        (
            f"Instruction: [SEP] {goal} [SEP] Back to Search [SEP] Page 1 (Total results: 50) "
            "[SEP] Next > [SEP] B09TEST001 [SEP] Item one [SEP] $19.99 [SEP] B09TEST002 [SEP] "
            "Item two [SEP] $24.50",
            {"has_search_bar": False, "clickables": ["back to search", "next >", "b09test001"]},
        ),
        (
            f"Instruction: [SEP] {goal} [SEP] Back to Search [SEP] < Prev [SEP] color [SEP] blue "
            "[SEP] Item one [SEP] Price: $19.99 [SEP] Rating: N.A. [SEP] Buy Now",
            {
                "has_search_bar": False,
                "clickables": ["back to search", "< prev", "blue", "buy now"],
            },
        ),
        (
            f"Instruction: [SEP] {goal} [SEP] Back to Search [SEP] < Prev [SEP] color [SEP] blue "
            "[SEP] Item one [SEP] Price: $19.99 [SEP] Rating: N.A. [SEP] Buy Now",
            {"has_search_bar": False, "clickables": ["back to search", "< prev", "buy now"]},
        ),
    ]
    turns = [f"Observation:\n{obs}\n\nAvailable Actions:\n{actions}" for obs, actions in pages]
    return first["input"], turns


def _mind2web_queries() -> list[str]:
    """Three candidate batches of one Mind2Web step, as AgentBench's task builds each query
    (``f"'''\\n{seq_context}\\n'''\\n\\n{seq_in}"``); each is sent after the prompt alone."""
    html = (
        "<html> <div> <form search> <input id=0 text where to? /> <button id=1 submit> Search "
        "</button> </form> <a id=2 deals> Deals </a> <ul> <li id=3> Paris </li> </ul> </div> "
        "</html>"
    )
    choices = [
        ["<input id=0 text where to? />", "<button id=1 submit> Search", "<a id=2 deals> Deals"],
        ["<li id=3> Paris </li>", "<a id=2 deals> Deals", "<button id=1 submit> Search"],
        ["<button id=1 submit> Search", "<input id=0 text where to? />", "<li id=3> Paris </li>"],
    ]
    queries = []
    for batch in choices:
        options = "\n".join(f"{letter}. {c}" for letter, c in zip("BCD", batch, strict=True))
        seq_in = (
            "Based on the HTML webpage above, try to complete the following task:\n"
            "Task: Find a hotel in Paris for two adults from May 3 to May 5\n"
            "Previous actions:\n[textbox]  Where to? -> TYPE: Paris\n"
            "What should be the next action? Please select from the following choices (If the "
            "correct action is not in the page above, please select A. 'None of the above'):\n\n"
            f"A. None of the above\n{options}"
        )
        queries.append(f"'''\n{html}\n'''\n\n{seq_in}")
    return queries


@pytest.fixture(scope="module")
def agentbench_server(tmp_path_factory, tiny_model_dir, agentbench_dir):
    """One ``genpi serve`` process with a random adapter per AgentBench prompt, and the agents
    ``genpi export agentbench`` wrote for it."""
    from genpi.adapter import make_random_adapter
    from genpi.prompt import load_prompt

    if not WEBSHOP_DEV.exists():
        pytest.skip(f"WebShop dev instructions not found at {WEBSHOP_DEV} (../shared)")
    prompts = {t: load_prompt(agentbench_dir / "prompts" / f"{t}.json") for t in TASKS}
    root = tmp_path_factory.mktemp("agentbench")
    adapters = {
        t: make_random_adapter(str(tiny_model_dir), prompts[t], root / t, seed=i + 1, rank=4)
        for i, t in enumerate(TASKS)
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = [f for t in TASKS for f in ("--adapter", f"{t}={adapters[t]}")]
    out = root / "export"
    argv = ["--url", f"{url}/v1", *flags, "--max-tokens", str(MAX_TOKENS), "--out", str(out)]
    assert _export(*argv) == 0
    agents = yaml.safe_load((out / "genpi_agents.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "GENPI_API_KEY"}
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    # No prefix cache: a round's answer is compared with the same view sent directly, and the
    # cached-prefix path may round differently from a full forward (the cache has its own tests).
    extra = ["--served-model-name", "tiny", "--threads", "1", "--prefix-cache-mb", "0"]
    cmd = serve_command(str(tiny_model_dir), port, *flags, *extra)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_healthy(proc, url, timeout=180)
        yield {"url": url, "agents": agents, "prompts": prompts, "out": out}
    finally:
        proc.kill()
        proc.wait()


def _episode(task: str, agentbench_dir: Path) -> list[tuple[str, list[str]]]:
    """(task input, the task's later user turns) per conversation: one conversation of several
    rounds for OS and WebShop; for Mind2Web one single-round conversation per query, as
    AgentBench clears the history before each."""
    if task == "os":
        problems = json.loads((agentbench_dir / "os_interaction/data/dev.json").read_text())
        return [_os_episode(problems)]
    if task == "webshop":
        first = json.loads(WEBSHOP_DEV.read_text().splitlines()[0])
        return [_webshop_episode(first)]
    return [(q, []) for q in _mind2web_queries()]


@pytest.mark.parametrize("task", TASKS)
def test_agentbench_episode_is_routed_to_its_adapter_with_the_prompt_stripped_every_round(
    agentbench_server, agentbench_dir, tokenizer, task
):
    from genpi.encoding import encode_chat

    agent = agentbench_server["agents"][task]
    prompt = agentbench_server["prompts"][task]
    chat_url = agent["parameters"]["url"]
    n_prompt = len(prompt.messages)
    rounds = 0
    for x, observations in _episode(task, agentbench_dir):
        history = _agentbench_turns(prompt.messages) + [{"role": "user", "content": prompt.fill(x)}]
        for observation in [*observations, None]:
            answer, resp, sent = http_agent_inference(agent, history)
            rounds += 1
            assert resp.headers["x-genpi-adapter"] == task
            assert resp.headers["x-genpi-route"] == "model"
            assert resp.headers["x-genpi-stripped-messages"] == str(n_prompt)
            body = resp.json()
            assert body["genpi"]["stripped_messages"] == n_prompt
            # What the adapter should have read: the student turn, then the episode's later turns.
            assert sent[:n_prompt] == [dict(m) for m in prompt.messages]
            view = prompt.student_messages(x) + sent[n_prompt + 1 :]
            view_tokens = len(encode_chat(tokenizer, view))
            assert body["usage"]["prompt_tokens"] == view_tokens
            saved = len(encode_chat(tokenizer, sent)) - view_tokens
            assert body["usage"]["prompt_tokens_saved"] == saved > 0
            # The same view sent directly to the adapter gets the same (greedy) answer.
            direct = httpx.post(
                chat_url,
                json={**agent["parameters"]["body"], "messages": view},
                timeout=120,
            )
            assert direct.headers["x-genpi-stripped-messages"] == "0"
            assert direct.json()["choices"][0]["message"]["content"] == answer
            history.append({"role": "agent", "content": answer})
            if observation is not None:
                history.append({"role": "user", "content": observation})
        # Naming the base model instead, the server recognises the prompt by itself (rule 2).
        by_prompt = httpx.post(
            chat_url,
            json={**agent["parameters"]["body"], "model": "tiny", "messages": sent},
            timeout=120,
        )
        assert by_prompt.headers["x-genpi-adapter"] == task
        assert by_prompt.headers["x-genpi-route"] == "prompt"
        assert by_prompt.headers["x-genpi-stripped-messages"] == str(n_prompt)
    assert rounds == (4 if task in ("os", "webshop") else 3)


def test_export_pairs_agentbench_prompts_with_their_tasks(agentbench_server):
    assignment = yaml.safe_load((agentbench_server["out"] / "genpi_assignment.yaml").read_text())
    assert assignment["assignments"] == [
        {"agent": "os", "task": ["os-dev"]},
        {"agent": "webshop", "task": ["webshop-dev"]},
        {"agent": "mind2web", "task": ["m2w-dev"]},
    ]
    assert assignment["concurrency"]["agent"] == {"os": 1, "webshop": 1, "mind2web": 1}
