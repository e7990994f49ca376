import subprocess
import sys

import pytest

from genpi import __version__
from genpi.cli import VERBS, available_verbs, main


def run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "genpi", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_help_lists_the_verbs_and_version_works():
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in available_verbs():
        assert verb in result.stdout
    assert "chat" in available_verbs()
    version = run_cli("--version")
    assert version.stdout.strip() == f"genpi {__version__}"


def test_every_present_verb_module_has_the_verb_interface():
    import importlib

    for module_name, _ in available_verbs().values():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.main), module_name
    assert set(available_verbs()) <= set(VERBS)


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    code = main(["chat", "--prompt", str(tmp_path / "missing.json"), "--input", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("genpi: error: prompt file") and "does not exist" in err
    assert "Traceback" not in err


def test_chat_one_shot_on_the_tiny_model(tiny_model_dir, example_prompt_path):
    result = run_cli(
        "chat",
        "--prompt",
        str(example_prompt_path),
        "--model",
        str(tiny_model_dir),
        "--compare",
        "--input",
        "count the files",
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert "=== with the prompt" in result.stdout and "=== without the prompt" in result.stdout


def test_chat_reads_inputs_from_stdin(tiny_model_dir, example_prompt_path):
    result = run_cli(
        "chat",
        "--prompt",
        str(example_prompt_path),
        "--model",
        str(tiny_model_dir),
        "--no-prompt",
        "--max-new-tokens",
        "3",
        input="first\nsecond\n",
    )
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()]) >= 1


@pytest.mark.parametrize("ref", ["vllm:smollm2-135m"])
def test_vllm_backend_without_vllm_says_so(ref):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from genpi.llm import BackendError, load_backend

    with pytest.raises(BackendError, match="needs the vllm package"):
        load_backend(ref)


def test_chat_refuses_an_adapter_made_for_another_prompt(
    tmp_path, tiny_model_dir, tiny_adapter_dir, capsys
):
    other = tmp_path / "other.txt"
    other.write_text("You are a pirate.")
    code = main(
        [
            "chat",
            "--prompt",
            str(other),
            "--model",
            str(tiny_model_dir),
            "--adapter",
            str(tiny_adapter_dir),
            "--input",
            "x",
        ]
    )
    assert code == 2
    assert "internalizes prompt 'shell-agent'" in capsys.readouterr().err
