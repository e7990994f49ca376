"""An adapter directory with a missing or truncated file: one line naming the file and the fix,
from every loader (chat, eval, serve, the library), and never a request to the Hub."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from genpi.cli import main

RESTORE = "retrain it with genpi train, or copy the file back"


def _remove(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _truncate(name: str) -> Callable[[Path], None]:
    def cut(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])

    return cut


# case -> (how the directory is broken, a regex of what the error says)
BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "weights-missing": (
        _remove("adapter_model.safetensors"),
        "adapter_model.safetensors' are missing",
    ),
    "weights-truncated": (
        _truncate("adapter_model.safetensors"),
        "adapter_model.safetensors' are truncated or corrupt",
    ),
    "config-missing": (_remove("adapter_config.json"), "no adapter_config.json"),
    "config-truncated": (
        _truncate("adapter_config.json"),
        "adapter_config.json' is unreadable or truncated",
    ),
    # serve reads the metadata before it checks the files: either message names file and fix
    "info-missing": (
        _remove("genpi_adapter.json"),
        r"genpi_adapter\.json(' is missing|: it was not trained by genpi.*if it was, retrain)",
    ),
    "info-truncated": (
        _truncate("genpi_adapter.json"),
        "genpi_adapter.json' is unreadable or truncated",
    ),
    "prompt-truncated": (_truncate("prompt.json"), "prompt.json' is unreadable or truncated"),
}


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """PEFT falls back to the Hub for a file a local directory lacks: make any such call fail
    the test instead of reaching the network (on the original code, too)."""
    import peft.config
    import peft.peft_model
    import peft.utils.other
    import peft.utils.save_and_load

    def refuse(*args, **kwargs):
        raise AssertionError(f"a Hub request for a local adapter directory: {args} {kwargs}")

    for module in (peft.config, peft.peft_model, peft.utils.save_and_load):
        monkeypatch.setattr(module, "hf_hub_download", refuse)
    for module in (peft.utils.other, peft.utils.save_and_load):
        monkeypatch.setattr(module, "file_exists", refuse)


@pytest.fixture(params=sorted(BREAKS))
def broken(request, tmp_path, tiny_adapter_dir) -> tuple[Path, str]:
    """A copy of the tiny adapter with one file missing or cut in half, and the expected error."""
    directory = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, directory)
    breaker, message = BREAKS[request.param]
    breaker(directory)
    return directory, message


def _one_line(err: str, message: str) -> None:
    assert err.startswith("genpi: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(message, err), err


def test_intact_and_plain_peft_adapters_pass_the_check(tmp_path, tiny_adapter_dir):
    from genpi.adapter import check_adapter_files

    check_adapter_files(tiny_adapter_dir)
    plain = tmp_path / "plain"  # a PEFT adapter made elsewhere: no genpi files at all
    plain.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(tiny_adapter_dir / name, plain / name)
    check_adapter_files(plain)


def test_chat_gives_one_line_for_a_broken_adapter(
    broken, tiny_model_dir, example_prompt_path, capsys
):
    directory, message = broken
    argv = ["chat", "--prompt", str(example_prompt_path), "--model", str(tiny_model_dir)]
    code = main([*argv, "--adapter", str(directory), "--input", "x", "--max-new-tokens", "2"])
    assert code == 2
    _one_line(capsys.readouterr().err, message)


def test_eval_gives_one_line_for_a_broken_adapter(
    broken, tmp_path, tiny_model_dir, example_prompt_path, capsys
):
    directory, message = broken
    inputs = tmp_path / "tasks.txt"
    inputs.write_text("list the files in /tmp\n")
    argv = ["eval", str(tmp_path / "run"), "--prompt", str(example_prompt_path)]
    argv += ["--model", str(tiny_model_dir), "--inputs", str(inputs), "--dtype", "fp32"]
    assert main([*argv, "--adapters", str(directory), "--max-new-tokens", "2"]) == 2
    _one_line(capsys.readouterr().err, message)


def test_local_backend_refuses_a_broken_adapter(broken, tiny_model_dir):
    from genpi.adapter import AdapterError
    from genpi.llm.base import BackendError
    from genpi.llm.local import LocalBackend

    directory, message = broken
    with pytest.raises((AdapterError, BackendError), match=message):
        LocalBackend.from_ref(str(tiny_model_dir), adapter=directory, dtype="fp32", device="cpu")


def test_attach_adapter_refuses_a_broken_adapter(broken, tiny_model_dir):
    """The lowest loader (merge and profile use it) checks on its own, without check_adapter."""
    from genpi.adapter import AdapterError, attach_adapter
    from genpi.llm.base import BackendError
    from genpi.models import load_model

    directory, message = broken
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    with pytest.raises((AdapterError, BackendError), match=message):
        attach_adapter(model, directory)


def test_eval_model_host_refuses_a_broken_adapter(broken, tiny_model_dir):
    from genpi.adapter import AdapterError
    from genpi.evaluate.systems import ModelHost, adapter_system
    from genpi.llm.base import BackendError

    directory, message = broken
    host = ModelHost.load(str(tiny_model_dir), dtype="fp32", device="cpu")
    with (
        pytest.raises((AdapterError, BackendError), match=message),
        host.active(adapter_system(directory)),
    ):
        pass


def test_serve_load_engine_refuses_a_broken_adapter(broken, tiny_model_dir):
    from genpi.adapter import AdapterError
    from genpi.serve.engine import load_engine

    directory, message = broken
    with pytest.raises(AdapterError, match=message):
        load_engine(str(tiny_model_dir), {"shell": directory}, dtype="fp32", device="cpu")


def test_the_error_says_how_to_fix_it(tmp_path, tiny_adapter_dir):
    from genpi.adapter import AdapterError, check_adapter_files

    directory = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, directory)
    (directory / "genpi_adapter.json").write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(AdapterError, match=f"does not hold a JSON object: {RESTORE}"):
        check_adapter_files(directory)
    (directory / "genpi_adapter.json").write_text(json.dumps({"method": "sft"}))
    from genpi.adapter import read_adapter_info

    with pytest.raises(
        AdapterError, match=r"lacks \['base_model', 'prompt_fingerprint', 'prompt_name'\]"
    ):
        read_adapter_info(directory)


def test_serve_and_the_vllm_export_refuse_a_soft_prompt_by_name(tmp_path, tiny_adapter_dir):
    """A soft prompt would load in serve's engine and then decode without its virtual tokens."""
    import argparse

    from genpi.adapter import AdapterError
    from genpi.serve import export
    from genpi.serve.engine import load_engine

    directory = tmp_path / "soft"
    shutil.copytree(tiny_adapter_dir, directory)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["peft_type"] = "PROMPT_TUNING"
    config_path.write_text(json.dumps(config))
    base = json.loads((tiny_adapter_dir / "adapter_config.json").read_text())
    model_ref = base["base_model_name_or_path"]
    with pytest.raises(AdapterError, match="is PROMPT_TUNING .* genpi serve runs LoRA adapters"):
        load_engine(model_ref, {"soft": directory}, dtype="fp32", device="cpu")
    args = argparse.Namespace(
        target="vllm", adapter=[f"soft={directory}"], model=None, out=None, port=8000
    )
    with pytest.raises(AdapterError, match="vLLM's --enable-lora runs LoRA adapters only"):
        export.main(args)
