"""What an adapter directory records beside its PEFT weights, and the checks on loading it.

An adapter directory holds

- ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT; loadable by vLLM ``--enable-lora``);
- ``genpi_adapter.json``: prompt fingerprint and name, base model reference and weights hash,
  method, hyperparameters, data fingerprint, chat template;
- ``prompt.json``: the prompt it internalizes.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.prompt import Prompt, prompt_from_dict

INFO_FILE = "genpi_adapter.json"
PROMPT_FILE = "prompt.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"  # PEFT's older format: plain PEFT adapters may hold it
RESTORE = "retrain it with genpi train, or copy the file back from where the adapter came from"


class AdapterError(GenpiError):
    pass


def _read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from an adapter's file, or an AdapterError naming the file and the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"adapter file {str(path)!r} is missing: {RESTORE}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise AdapterError(
            f"adapter file {str(path)!r} is unreadable or truncated ({exc}): {RESTORE}"
        ) from None
    if not isinstance(data, dict):
        raise AdapterError(f"adapter file {str(path)!r} does not hold a JSON object: {RESTORE}")
    return data


def check_adapter_files(adapter_dir: str | Path) -> None:
    """Refuse an adapter directory whose files are missing or broken, before PEFT reads it.

    PEFT answers a missing or truncated file with a traceback, and a missing weights file with a
    download attempt from the Hub under the directory's name; every loader calls this first.
    """
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterError(
            f"{str(adapter_dir)!r} is not an adapter directory (it does not exist): "
            "give the directory genpi train wrote (RUN_DIR/adapters/NAME)"
        )
    if not (adapter_dir / CONFIG_FILE).exists():
        raise AdapterError(
            f"{str(adapter_dir)!r} is not an adapter directory (no {CONFIG_FILE}): "
            f"give the directory genpi train wrote, or {RESTORE}"
        )
    _read_json_file(adapter_dir / CONFIG_FILE)
    weights = adapter_dir / WEIGHTS_FILE
    if weights.exists():
        from safetensors import safe_open

        try:
            # Reads the header and checks that it covers the whole file: a cut-off copy fails.
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as exc:  # SafetensorError, OSError: a broken file either way
            raise AdapterError(
                f"adapter weights {str(weights)!r} are truncated or corrupt ({exc}): {RESTORE}"
            ) from None
    elif not (adapter_dir / LEGACY_WEIGHTS_FILE).exists():
        raise AdapterError(f"adapter weights {str(weights)!r} are missing: {RESTORE}")
    # genpi writes its metadata and the prompt with the weights: one without the other is damage.
    info, prompt = adapter_dir / INFO_FILE, adapter_dir / PROMPT_FILE
    if info.exists() or prompt.exists():
        _read_json_file(info)
        _read_json_file(prompt)


@dataclass
class AdapterInfo:
    prompt_fingerprint: str
    prompt_name: str
    base_model: str  # the model reference used for training (e.g. smollm2-135m)
    base_weights_sha256: str | None = None
    method: str = "genpi"
    config: dict[str, Any] = field(default_factory=dict)  # every hyperparameter
    data_fingerprint: str | None = None
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_adapter_info(adapter_dir: str | Path, info: AdapterInfo, prompt: Prompt) -> None:
    adapter_dir = Path(adapter_dir)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    (adapter_dir / INFO_FILE).write_text(
        json.dumps(info.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    prompt.save(adapter_dir / PROMPT_FILE)


def read_adapter_info(adapter_dir: str | Path) -> AdapterInfo:
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / CONFIG_FILE).exists():
        raise AdapterError(f"{str(adapter_dir)!r} is not an adapter directory (no {CONFIG_FILE})")
    path = adapter_dir / INFO_FILE
    if not path.exists():
        raise AdapterError(
            f"{str(adapter_dir)!r} has no {INFO_FILE}: it was not trained by genpi, so its prompt "
            f"is unknown; if it was, {RESTORE}"
        )
    data = _read_json_file(path)
    known = set(AdapterInfo.__dataclass_fields__)
    try:
        return AdapterInfo(**{k: v for k, v in data.items() if k in known})
    except TypeError:  # a required field is absent
        required = [
            f.name for f in fields(AdapterInfo) if f.default is f.default_factory is MISSING
        ]
        raise AdapterError(
            f"adapter file {str(path)!r} lacks {sorted(set(required) - set(data))}: {RESTORE}"
        ) from None


def read_adapter_prompt(adapter_dir: str | Path) -> Prompt:
    path = Path(adapter_dir) / PROMPT_FILE
    if not path.exists():
        raise AdapterError(f"{str(adapter_dir)!r} has no {PROMPT_FILE}")
    return prompt_from_dict(_read_json_file(path), source=str(path))


def check_adapter(
    adapter_dir: str | Path,
    *,
    base_model: str | None = None,
    base_weights_sha256: str | None = None,
    prompt: Prompt | None = None,
) -> AdapterInfo:
    """Refuse an adapter trained on another base model or for another prompt, or with broken
    files (before any model is loaded for it)."""
    check_adapter_files(adapter_dir)
    info = read_adapter_info(adapter_dir)
    if base_weights_sha256 and info.base_weights_sha256:
        if base_weights_sha256 != info.base_weights_sha256:
            raise AdapterError(
                f"adapter {str(adapter_dir)!r} was trained on other weights ({info.base_model}, "
                f"sha256 {info.base_weights_sha256[:12]}) than the model given ({base_model}, "
                f"sha256 {base_weights_sha256[:12]}): load it with --model {info.base_model}"
            )
    # Without a weights hash on both sides, the model references must agree.
    elif base_model and base_model != info.base_model:
        raise AdapterError(
            f"adapter {str(adapter_dir)!r} was trained on {info.base_model!r}, not {base_model!r}: "
            f"load it with --model {info.base_model}"
        )
    if prompt is not None and prompt.fingerprint != info.prompt_fingerprint:
        raise AdapterError(
            f"adapter {str(adapter_dir)!r} internalizes prompt {info.prompt_name!r} "
            f"({info.prompt_fingerprint[:12]}), not {prompt.name!r} ({prompt.fingerprint[:12]})"
        )
    return info
