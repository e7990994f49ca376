"""Proof that the harness is right: the oracle agent passes AgentBench's OS dev split in real
sandboxes (>= 24 of 26), a sabotaged oracle does not, and `start` commands really run in the
agent's shell. Needs root, bubblewrap, the cached root filesystem and ../shared."""

from __future__ import annotations

import pytest

from genpi.bench.os.agents import OracleAgent
from genpi.bench.os.sandbox import Limits, SandboxFactory
from genpi.bench.os.task import evaluate, load_problems, run_episode

# Every failure the oracle is allowed, with why (docs/bench.md repeats these).
KNOWN_FAILURES = {
    # `du -sh /home` prints "4.0K" (or "8.0K" on Docker's ext4): check/size-match.py does
    # int("4.0") and raises, so AgentBench's own example answer fails its own check.
    "dev-00008": "size-match.py cannot parse du's one-decimal sizes",
}


@pytest.fixture(scope="module")
def factory(sandbox_rootfs):
    return SandboxFactory(backend="namespace", rootfs=sandbox_rootfs, limits=Limits())


@pytest.fixture(scope="module")
def problems(agentbench_dir):
    return load_problems(agentbench_dir / "os_interaction", "dev")


def test_oracle_passes_the_dev_split(problems, factory, tmp_path):
    summary = evaluate(problems, OracleAgent(), factory, out_dir=tmp_path, concurrency=2)
    assert summary["total"] == 26
    assert summary["pass"] >= 24, summary["failed"]
    assert set(summary["failed"]) <= set(KNOWN_FAILURES), summary["failed"]
    assert len(list((tmp_path / "transcripts").glob("*.jsonl"))) == 26


class WrongAnswers(OracleAgent):
    """The oracle's actions with every answer off by one: the checks must reject them."""

    name = "sabotaged"

    def act(self, problem, conversation):
        reply = super().act(problem, conversation)
        if "Act: answer(" in reply:
            answer = reply.split("Act: answer(", 1)[1].rsplit(")", 1)[0]
            wrong = str(int(answer) + 1) if answer.isdigit() else answer + "x"
            return reply.replace(f"answer({answer})", f"answer({wrong})")
        return reply


def test_wrong_answers_fail_the_checks(problems, factory):
    picked = [p for p in problems if p.id in ("dev-00000", "dev-00006", "dev-00014", "dev-00022")]
    summary = evaluate(picked, WrongAnswers(), factory)
    assert summary["pass"] == 0, summary["outcomes"]


class Watcher:
    name = "watcher"

    def begin(self, problem):
        return [{"role": "user", "content": problem.description}]

    def act(self, problem, conversation):
        if len(conversation) == 1:
            return "Act: bash\n```bash\nsleep 2.5; cat /root/log; echo; ls /root\n```"
        return "Act: answer(1)"


def test_start_command_runs_in_the_agents_shell(problems, factory):
    transcript = []
    with factory() as sandbox:
        outcome = run_episode(problems[0], Watcher(), sandbox, transcript=transcript)
    seen = [e["content"] for e in transcript if e.get("role") == "user"][-1]
    assert "succeedsucceed" in seen  # the background writer ran for the whole round
    assert outcome.result


def test_cli_oracle_run_and_upper_bound(agentbench_dir, factory, tmp_path, capsys):
    from genpi.cli import main

    data = str(agentbench_dir / "os_interaction")
    first = ["eval-os", "--data", data, "--oracle", "--limit", "3", "--backend", "namespace"]
    assert main([*first, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "result.json").is_file()
    bound = str(tmp_path / "a" / "result.json")
    assert main([*first, "--out", str(tmp_path / "b"), "--upper-bound", bound]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"normalized": 1.0' in line and '"pass": 3' in line
    # Another --limit resumes the same run; another command timeout is another run.
    more = ["eval-os", "--data", data, "--oracle", "--limit", "4", "--backend", "namespace"]
    assert main([*more, "--out", str(tmp_path / "a")]) == 0
    assert len(list((tmp_path / "a" / "transcripts").glob("*.jsonl"))) == 4
    assert main([*first, "--out", str(tmp_path / "a"), "--timeout", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
