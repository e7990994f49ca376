"""The benchmark registry: readers come from the harnesses, `eval-agent --bench` runs them."""

from __future__ import annotations

import pytest

from genpi.bench import HARNESSES, get_harness, harness_for_prompt, runnable
from genpi.errors import GenpiError
from genpi.evaluate.readers import reader_for, reader_name
from genpi.prompt import Prompt


def _prompt(name: str) -> Prompt:
    return Prompt(messages=({"role": "system", "content": "Act."},), name=name)


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_every_harness_has_a_reader_and_eval_finds_it_by_prompt_name(name):
    from genpi.cli import main

    harness = get_harness(name)
    assert harness_for_prompt(f"AgentBench-{name}") is harness
    assert reader_name(_prompt(name)) == name
    assert reader_for(_prompt(f"agentbench-{name}")) is harness.reader()
    assert harness.reader()("nothing to read") is None
    if harness.runs:
        module = harness.cli()
        assert callable(module.add_harness_arguments) and callable(module.main)
    else:
        with pytest.raises(GenpiError, match="no harness here"):
            harness.cli()
        with pytest.raises(SystemExit):  # not a --bench choice: argparse's usage error
            main(["eval-agent", "--bench", name, "--data", "."])


def test_unknown_benchmark_is_a_one_line_error():
    with pytest.raises(GenpiError, match="no benchmark 'chess'"):
        get_harness("chess")
    assert harness_for_prompt("my-assistant") is None
    assert "os" in runnable()


def test_eval_agent_runs_a_harness_and_eval_os_stays_its_alias(tmp_path, capsys):
    from genpi.cli import main

    for argv in (["eval-agent", "--bench", "os"], ["eval-os"]):
        assert main([*argv, "--data", str(tmp_path), "--oracle", "--rounds", "3"]) == 2
        assert "no problem files" in capsys.readouterr().err


def test_mind2web_runs_through_eval_agent(capsys):
    from pathlib import Path

    from genpi.cli import main

    assert runnable() == ["os", "mind2web"]
    assert get_harness("mind2web").cli().add_harness_arguments
    data = Path(__file__).parent / "data" / "mind2web_tiny.json"
    assert main(["eval-agent", "--bench", "mind2web", "--data", str(data), "--oracle"]) == 0
    assert '"total": 5, "pass": 3' in capsys.readouterr().out
    # the OS harness's alias verb does not take mind2web's flags
    with pytest.raises(SystemExit):
        main(["eval-os", "--data", str(data), "--oracle", "--top-k", "5"])
